# Processes in process-compose's format: a queue, a one-shot migration, a web server and a
# worker, started in dependency order, gated by readiness probes, restarted by policy and by a
# liveness probe.
{ pkgs, ... }:
{
  systemPackages = [
    pkgs.python3
    pkgs.redis
  ];

  processes = {
    redis = {
      entrypoint = [
        "redis-server"
        "--port"
        "6379"
        "--save"
        ""
      ];
      readiness_probe = {
        tcp_socket.port = 6379;
        period_seconds = 1;
      };
      availability.restart = "always";
    };

    migrate = {
      command = "python3 /app/migrate.py";
      depends_on.redis.condition = "process_healthy";
    };

    web = {
      entrypoint = [
        "python3"
        "-m"
        "http.server"
        "8000"
        "--directory"
        "/srv"
      ];
      depends_on.migrate.condition = "process_completed_successfully";
      readiness_probe = {
        http_get = {
          port = 8000;
          path = "/";
        };
        period_seconds = 2;
      };
      liveness_probe = {
        http_get.port = 8000;
        period_seconds = 10;
        failure_threshold = 3;
      };
      availability = {
        restart = "on_failure";
        backoff_seconds = 1;
        max_restarts = 10;
      };
      shutdown.timeout_seconds = 5;
    };

    worker = {
      command = "python3 /app/worker.py --queue redis://127.0.0.1:6379";
      environment = [ "PYTHONUNBUFFERED=1" ];
      depends_on = {
        redis.condition = "process_healthy";
        web.condition = "process_healthy";
      };
      availability.restart = "always";
    };
  };

  exposedPorts = {
    "22/tcp" = { };
    "8000/tcp" = { };
  };

  nix2gpu.shutdown_timeout_seconds = 10;
}

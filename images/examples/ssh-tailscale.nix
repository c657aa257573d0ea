# Remote access and observability: settings of nix2gpu-init's built-in nodes. The health
# endpoint serves /healthz, /readyz, /status and /metrics; its port is exposed by default.
{
  nix2gpu = {
    health.listen = "0.0.0.0:9100";
    log.format = "json";
    shutdown_timeout_seconds = 10;

    # With nix2gpu-init's built-in access nodes (see the README's nix2gpu keys):
    #   ssh = {
    #     port = 2222;
    #     password_auth = false;
    #     authorized_keys_file = "/run/secrets/authorized_keys";
    #   };
    #   tailscale = {
    #     hostname = "gpu-box";
    #     state_dir = "/workspace/tailscale";
    #     accept_routes = true;
    #   };
  };

  # nix2gpu's option, the same as nix2gpu.tailscale = { enable = true; auth_key_file = ...; }
  # (the file is read when the container starts, never built into the image):
  #   tailscale = {
  #     enable = true;
  #     authKey = "/run/secrets/tailscale-auth-key";
  #   };
}

# Remote access and observability: settings of nix2gpu-init's built-in nodes. The health
# endpoint serves /healthz, /readyz, /status and /metrics; its port is exposed by default.
{
  nix2gpu = {
    health.listen = "0.0.0.0:9100";
    log.format = "json";
    shutdown_timeout_seconds = 10;

    # The built-in sshd node (see the README's Built-in nodes): keys from a mounted secret.
    ssh = {
      port = 2222;
      password_auth = false;
      authorized_keys_file = "/run/secrets/authorized_keys";
    };
    # Settings of the built-in tailscale node; nix2gpu's option below turns it on.
    tailscale = {
      hostname = "gpu-box";
      state_dir = "/workspace/tailscale";
      accept_routes = true;
    };
  };

  # nix2gpu's option, the same as nix2gpu.tailscale = { enable = true; auth_key_file = ...; }
  # (the file is read when the container starts, never built into the image).
  tailscale = {
    enable = true;
    authKey = "/run/secrets/tailscale-auth-key";
  };
}

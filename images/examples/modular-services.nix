# NixOS modular services, as in nix2gpu, and an extraStartupScript that prepares the
# workspace before any service starts. `processes.files` adds a probe and a restart policy to
# the service of the same name.
{ pkgs, ... }:
{
  systemPackages = [ pkgs.python3 ];

  extraStartupScript = ''
    mkdir -p /workspace/files
    if [ ! -e /workspace/files/index.html ]; then
      echo "<h1>served by $HOSTNAME</h1>" > /workspace/files/index.html
    fi
  '';

  services.files.process.argv = [
    "python3"
    "-m"
    "http.server"
    "8080"
    "--directory"
    "/workspace/files"
  ];

  # A service module from nixpkgs is used the same way (left out here because the examples
  # are also evaluated without nixpkgs):
  #   services.tunnel = {
  #     imports = [ pkgs.ghostunnel.services.default ];
  #     ghostunnel = { listen = "0.0.0.0:443"; target = "127.0.0.1:8080"; ... };
  #   };

  processes.files = {
    readiness_probe.http_get.port = 8080;
    availability.restart = "on_failure";
  };

  exposedPorts = {
    "22/tcp" = { };
    "8080/tcp" = { };
  };
}

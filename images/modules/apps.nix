# The apps of an image, in its passthru: `nix run .#<name>.<app>`.
#
#   copyToRegistry          push to every `registries` entry with skopeo, using the credentials
#                           of `skopeo login` / `docker login` (extra arguments go to skopeo)
#   copyToGithub            the same, logged in with the GitHub CLI's token (never on a
#                           command line: it goes through a temporary auth file)
#   copyToContainerRuntime  load into podman, else docker; fails if there is neither
#   shell                   an interactive shell in the image (podman, else docker), with the
#                           current directory at /workspace; also dockerShell, podmanShell
#
# nix2container's own copyToDockerDaemon, copyToPodman and copyTo stay available.
{
  config,
  lib,
  pkgs,
  name,
  nix2gpuPackages,
  ...
}:
let
  inherit (lib) mkOption types;
  inherit (nix2gpuPackages) skopeo;

  image = config.builtImage;
  reference = "${name}:${config.tag}";
  # ghcr.io/my-org -> ghcr.io: where to log in.
  registryHosts = lib.unique (map (registry: lib.head (lib.splitString "/" registry)) config.registries);

  # A script that logs in (setting `auth`, skopeo options), then pushes to every registry.
  pushWith =
    {
      app,
      runtimeInputs ? [ ],
      login,
    }:
    pkgs.writeShellApplication {
      name = "${name}-${app}";
      runtimeInputs = [ skopeo ] ++ runtimeInputs;
      text =
        if config.registries == [ ] then
          ''
            echo "nix2gpu: set registries in nix2gpu.${name} to say where to push the image" >&2
            exit 1
          ''
        else
          ''
            registries=(${lib.escapeShellArgs config.registries})
            ${login}
            for registry in "''${registries[@]}"; do
              echo "copying ${reference} to $registry/${reference}" >&2
              skopeo --insecure-policy copy "''${auth[@]}" "$@" \
                "nix:${image}" "docker://$registry/${reference}"
            done
          '';
    };

  runtimeMissing = ''
    echo "nix2gpu: neither podman nor docker is on PATH" >&2
    exit 1
  '';

  shellWith =
    runtime:
    pkgs.writeShellApplication {
      name = "${name}-${runtime}-shell";
      text = ''
        if ! ${runtime} image inspect ${reference} >/dev/null 2>&1; then
          echo "nix2gpu: ${reference} is not in ${runtime}: run \`nix run .#${name}.copyToContainerRuntime\` first" >&2
          exit 1
        fi
        exec ${runtime} run --rm -it --gpus all \
          -v "$PWD:/workspace" -w /workspace \
          ${reference} -- /bin/bash "$@"
      '';
    };

  dockerShell = shellWith "docker";
  podmanShell = shellWith "podman";
in
{
  options.apps = mkOption {
    type = types.lazyAttrsOf types.package;
    readOnly = true;
    internal = true;
    description = "The apps, added to the image's passthru.";
  };

  config.apps = {
    copyToRegistry = pushWith {
      app = "copy-to-registry";
      login = "auth=()";
    };

    copyToGithub = pushWith {
      app = "copy-to-github";
      runtimeInputs = [
        pkgs.coreutils
        pkgs.gh
      ];
      login = ''
        if ! gh auth status >/dev/null 2>&1; then
          gh auth login --scopes write:packages
        fi
        authdir="$(mktemp -d)"
        trap 'rm -rf "$authdir"' EXIT
        hosts=(${lib.escapeShellArgs registryHosts})
        for host in "''${hosts[@]}"; do
          gh auth token | skopeo login --authfile "$authdir/auth.json" \
            --username "$(gh api user --jq .login)" --password-stdin "$host"
        done
        auth=(--dest-authfile "$authdir/auth.json")
      '';
    };

    copyToContainerRuntime = pkgs.writeShellApplication {
      name = "copy-${name}-to-container-runtime";
      text = ''
        if command -v podman >/dev/null; then
          exec ${lib.getExe image.copyToPodman} "$@"
        elif command -v docker >/dev/null; then
          exec ${lib.getExe image.copyToDockerDaemon} "$@"
        fi
        ${runtimeMissing}
      '';
    };

    shell = pkgs.writeShellApplication {
      name = "${name}-shell";
      text = ''
        if command -v podman >/dev/null; then
          exec ${lib.getExe podmanShell} "$@"
        elif command -v docker >/dev/null; then
          exec ${lib.getExe dockerShell} "$@"
        fi
        ${runtimeMissing}
      '';
    };

    inherit dockerShell podmanShell;
  };
}

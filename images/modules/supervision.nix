# What nix2gpu-init runs: processes, modular services, the startup script and the settings of
# the init and its built-in nodes, turned into /etc/nix2gpu/config.json by ../lib/config.nix.
# The file is validated while the image builds, by the very init that will read it.
{
  config,
  lib,
  pkgs,
  name,
  nix2gpuPackages,
  ...
}:
let
  inherit (lib) mkOption types literalExpression;
  modularServices = import ./modular-services.nix { inherit pkgs; };
  mkConfig = import ../lib/config.nix;

  settings = lib.getAttrs [ "processes" "extraStartupScript" "nix2gpu" "tailscale" "extraConfig" ] config;

  setting = path: default: lib.attrByPath path default config.nix2gpu;
  sshEnabled = setting [ "ssh" "enable" ] "auto" != false;
  tailscaleEnabled = config.tailscale.enable || setting [ "tailscale" "enable" ] "auto" == true;
in
{
  options = {
    processes = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
      example = literalExpression ''
        {
          web = {
            entrypoint = [ "python3" "-m" "http.server" "8000" ];
            readiness_probe.http_get = { port = 8000; path = "/"; };
            availability.restart = "on_failure";
          };
          worker.command = "python3 worker.py";
          worker.depends_on.web.condition = "process_healthy";
        }
      '';
      description = ''
        Processes for nix2gpu-init, in process-compose's format (command or entrypoint,
        depends_on, readiness/liveness probes, availability, shutdown, user, ...): see the
        nix2gpu-init README. A process named like a service adds settings to that service.
      '';
    };

    services = mkOption {
      type = types.lazyAttrsOf modularServices.type;
      default = { };
      example = literalExpression ''
        {
          tunnel = {
            imports = [ pkgs.ghostunnel.services.default ];
            ghostunnel = { listen = "0.0.0.0:443"; target = "localhost:8000"; };
          };
        }
      '';
      description = ''
        NixOS modular services, as in nix2gpu. Each becomes a process running its
        `process.argv`; sub-services become `<parent>-<child>`.
      '';
    };

    extraStartupScript = mkOption {
      type = types.lines;
      default = "";
      description = ''
        Shell text run once by bash (errexit, nounset, pipefail) as the one-shot process
        `startup`; every other process and service starts after it has completed successfully.
      '';
    };

    nix2gpu = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = literalExpression ''
        {
          ssh = { port = 2222; password_auth = false; };
          health.listen = "0.0.0.0:9100";
          log.format = "json";
        }
      '';
      description = ''
        The `nix2gpu:` section of the configuration: settings of the init and its built-in
        nodes (gpu, ssh, tailscale, health, log, shutdown_timeout_seconds). Passed through; the
        init checks them.
      '';
    };

    tailscale = {
      enable = lib.mkEnableOption "the tailscale node (nix2gpu's option; the same as nix2gpu.tailscale.enable = true)";
      authKey = mkOption {
        type = types.str;
        default = "";
        example = "/run/secrets/tailscale-auth-key";
        description = "A file, at run time, holding the auth key (nix2gpu.tailscale.auth_key_file).";
      };
    };

    extraConfig = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      example = literalExpression ''{ log_level = "debug"; environment = [ "HF_HOME=/workspace/hf" ]; }'';
      description = "Other top-level keys of the configuration.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `nix2gpu-init check` on the configuration while the image builds. It resolves
        `user` names and `env_file`s on the build machine, not in the image: switch it off if a
        process names an account or file only the image has.
      '';
    };

    configAttrs = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      internal = true;
      description = "The configuration, before it is written as JSON.";
    };

    configFile = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      description = "The configuration as a (checked) JSON file.";
    };
  };

  config = {
    configAttrs = mkConfig (
      settings
      // {
        inherit (config) services;
        serviceConfigDirs = modularServices.configDirectories config.services;
      }
    );

    configFile =
      pkgs.runCommand "nix2gpu-${name}-config.json"
        {
          nativeBuildInputs = [
            pkgs.jq
            nix2gpuPackages.init
          ];
          json = builtins.toJSON config.configAttrs;
          passAsFile = [ "json" ];
        }
        ''
          jq . "$jsonPath" > config.json
          ${lib.optionalString config.checkConfig "nix2gpu-init check --config config.json"}
          cp config.json "$out"
        '';

    systemPackages = lib.optional sshEnabled pkgs.openssh ++ lib.optional tailscaleEnabled pkgs.tailscale;

    assertions = lib.concatLists (
      lib.mapAttrsToList (
        service: value: modularServices.getAssertions [ "services" service ] value
      ) config.services
    );
    warnings = lib.concatLists (
      lib.mapAttrsToList (service: value: modularServices.getWarnings [ "services" service ] value) config.services
    );
  };
}

# The type of `services.<name>`: NixOS modular services, as nixpkgs defines them, plus what a
# service manager has to add. Ours is small: each `configData` file is linked into one store
# directory per service, `configData.<file>.path` points into it, and the service is started
# with XDG_CONFIG_HOME set to it (as nix2gpu's supervisor did).
{ pkgs }:
let
  inherit (pkgs) lib;
  inherit (lib) mkOption types;

  # Where modular services live depends on the nixpkgs revision.
  modernLib = pkgs.path + "/lib/services/lib.nix";
  portableLib = pkgs.path + "/nixos/modules/system/service/portable/lib.nix";
  portable =
    if lib ? services then
      lib.services
    else if builtins.pathExists modernLib then
      import modernLib { inherit lib; }
    else if builtins.pathExists portableLib then
      import portableLib { inherit lib; }
    else
      throw "nix2gpu: this nixpkgs has no modular services (lib/services); `services` needs nixpkgs 25.11 or later";

  # configData came with lib/services; the older portable services have no such option.
  hasConfigData = lib ? services || builtins.pathExists modernLib;

  configDataModule =
    { config, name, ... }:
    let
      files = lib.filter (file: file.enable) (lib.attrValues config.configData);
      directory = pkgs.linkFarm "service-${name}-config" (
        map (file: {
          inherit (file) name;
          path = file.source;
        }) files
      );
    in
    {
      options.configData = mkOption {
        type = types.lazyAttrsOf (
          types.submodule (
            { config, ... }:
            {
              config.path = "${directory}/${config.name}";
            }
          )
        );
      };
      options.services = mkOption {
        type = types.attrsOf (types.submoduleWith { modules = [ configDataModule ]; });
      };
      options.nix2gpu.configDirectory = mkOption {
        type = types.nullOr types.str;
        internal = true;
        readOnly = true;
        description = "The directory of the service's configData files, if it has any.";
      };
      config.nix2gpu.configDirectory = if files == [ ] then null else "${directory}";
    };

  configured = portable.configure {
    serviceManagerPkgs = pkgs;
    extraRootModules = lib.optional hasConfigData configDataModule;
  };
in
{
  type = configured.serviceSubmodule;

  inherit (portable) getAssertions getWarnings;

  # Process name -> configData directory, for every service and sub-service that has files
  # (the names are those ../lib/config.nix gives their processes).
  configDirectories =
    services:
    let
      walk =
        prefix: name: service:
        let
          processName = prefix + name;
          directory = if hasConfigData then service.nix2gpu.configDirectory else null;
        in
        lib.optionalAttrs (directory != null) { ${processName} = directory; }
        // lib.concatMapAttrs (walk "${processName}-") service.services;
    in
    lib.concatMapAttrs (walk "") services;
}

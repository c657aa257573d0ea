# The flake-parts module users import: `perSystem.nix2gpu.<name>` defines one image each,
# built as `packages.<name>` (its apps in passthru: `nix run .#<name>.copyToRegistry`), with
# `checks.<name>` validating its nix2gpu-init configuration.
#
# The init and nix2container come from this flake (`withSystem`), the image's packages from
# the user's `pkgs`.
{ withSystem }:
{ lib, flake-parts-lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.perSystem = flake-parts-lib.mkPerSystemOption (
    { pkgs, system, ... }:
    {
      options.nix2gpu = mkOption {
        type = types.lazyAttrsOf (
          types.submoduleWith {
            class = "nix2gpu";
            modules = [ ./modules ];
            specialArgs = {
              inherit pkgs;
              nix2gpuPackages = withSystem system (
                { config, inputs', ... }:
                {
                  init = config.packages.nix2gpu-init;
                  inherit (inputs'.nix2container.packages) nix2container;
                  skopeo = inputs'.nix2container.packages.skopeo-nix2container;
                }
              );
            };
          }
        );
        default = { };
        description = ''
          GPU container images, by name: the settings nix2gpu users know (cuda, env,
          systemPackages, services, tailscale, ...) plus nix2gpu-init's processes and `nix2gpu`
          settings. See images/README.md.
        '';
      };
    }
  );

  config.perSystem =
    { config, ... }:
    {
      packages = lib.mapAttrs (_: image: image.image) config.nix2gpu;
      checks = lib.mapAttrs (_: image: image.configFile) config.nix2gpu;
    };
}

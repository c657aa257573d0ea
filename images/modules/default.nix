# The module of one image, `perSystem.nix2gpu.<name>`. Besides the usual module arguments it is
# given (by ../flake-module.nix) `pkgs` and `nix2gpuPackages` = { init; nix2container; skopeo; }.
{
  imports = [
    ./image.nix
    ./cuda.nix
    ./supervision.nix
    ./base-system.nix
    ./apps.nix
    ./checks.nix
  ];
}

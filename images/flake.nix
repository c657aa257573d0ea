{
  description = "nix2gpu-init in GPU container images: perSystem.nix2gpu.<name> for flake-parts";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    nix2container = {
      url = "github:nlewo/nix2container";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    inputs@{ flake-parts, nixpkgs, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } (
      { withSystem, flake-parts-lib, ... }:
      let
        flakeModule = flake-parts-lib.importApply ./flake-module.nix { inherit withSystem; };
      in
      {
        systems = [ "x86_64-linux" ];

        # This flake uses its own module for the examples: `nix build .#minimal`.
        imports = [ flakeModule ];
        flake = { inherit flakeModule; };

        perSystem =
          { pkgs, system, ... }:
          {
            _module.args.pkgs = import nixpkgs {
              inherit system;
              config.allowUnfree = true;
            };

            packages.nix2gpu-init = pkgs.callPackage ./package.nix { };

            nix2gpu = {
              minimal = ./examples/minimal.nix;
              services = ./examples/services.nix;
              modular-services = ./examples/modular-services.nix;
              ssh-tailscale = ./examples/ssh-tailscale.nix;
            };
          };
      }
    );
}

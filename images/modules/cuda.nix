# CUDA in the image: the toolkit and libraries, the variables and labels the NVIDIA container
# toolkit reads. The driver itself comes from the host at run time (nix2gpu-init's gpu node
# makes it visible).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types literalExpression;
  cfg = config.cuda;
in
{
  options.cuda = {
    enable = mkOption {
      type = types.bool;
      default = true;
      description = "Put CUDA in the image.";
    };

    packages = mkOption {
      type = types.attrsOf types.raw;
      default = pkgs.cudaPackages;
      defaultText = literalExpression "pkgs.cudaPackages";
      example = literalExpression "pkgs.cudaPackages_12_8";
      description = ''
        The CUDA package set (it needs cudatoolkit, cudnn, libcublas, libcufile, libcusparse
        and nccl). Unfree: the flake's nixpkgs needs `config.allowUnfree = true`.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    systemPackages = with cfg.packages; [
      cudatoolkit
      cudnn
      libcublas
      libcufile
      libcusparse
      nccl
    ];

    extraEnv = {
      CUDA_VERSION = cfg.packages.cudaMajorMinorVersion;
      NVIDIA_DISABLE_REQUIRE = "0";
      NVIDIA_DRIVER_CAPABILITIES = "compute,utility,graphics";
      NVIDIA_REQUIRE_CUDA = "cuda>=11.0";
      NVIDIA_VISIBLE_DEVICES = "all";
    };

    extraLabels = {
      "com.nvidia.volumes.needed" = "nvidia_driver";
      "com.nvidia.cuda.version" = cfg.packages.cudatoolkit.version;
    };
  };
}

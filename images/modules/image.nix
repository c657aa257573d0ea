# The image itself: its contents, layers and OCI configuration.
#
# Layers: the init and the base system (/etc, the loader link, FHS directories, with their
# closure: glibc, bash, coreutils, CA certificates) are layers of their own, built from nothing
# that depends on the image, so every image of a flake shares them (a registry stores and a
# host pulls them once). The rest (the packages, /etc/nix2gpu/config.json, /etc/nix/nix.conf)
# is split by popularity into up to `maxLayers` more.
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
  inherit (nix2gpuPackages) init nix2container;
  imageLib = import ../lib/image-config.nix;

  configPath = "/etc/nix2gpu/config.json";

  profile = pkgs.buildEnv {
    name = "nix2gpu-${name}-profile";
    paths = config.basePackages ++ config.systemPackages;
    pathsToLink = [
      "/bin"
      "/sbin"
      "/lib"
      "/libexec"
      "/share"
    ];
  };

  # Regular files, not links into the store: the init and the user may change them at runtime.
  imageFiles = pkgs.runCommand "nix2gpu-${name}-files" { } ''
    mkdir -p "$out/etc/nix2gpu" "$out/etc/nix"
    cp ${config.configFile} "$out${configPath}"
    cp ${pkgs.writeText "nix.conf" config.nixConfig} "$out/etc/nix/nix.conf"
  '';

  initLayer = nix2container.buildLayer { deps = [ init ]; };

  baseLayer = nix2container.buildLayer {
    copyToRoot = [ config.baseSystem.root ];
    inherit (config.baseSystem) perms;
    layers = [ initLayer ];
  };

  ociConfig = imageLib.ociConfig {
    init = lib.getExe init;
    configFile = configPath;
    inherit (config)
      env
      extraEnv
      labels
      extraLabels
      exposedPorts
      user
      workingDir
      ;
  };

  built = nix2container.buildImage {
    inherit name;
    inherit (config) tag maxLayers initializeNixDatabase;
    layers = [
      initLayer
      baseLayer
    ];
    copyToRoot = [
      profile
      imageFiles
    ]
    ++ config.copyToRoot;
    config = ociConfig;
    inherit (config) meta;
  };
in
{
  options = {
    tag = mkOption {
      type = types.str;
      default = "latest";
      description = "The image tag.";
    };

    maxLayers = mkOption {
      type = types.ints.positive;
      default = 50;
      description = ''
        The most layers the image's own packages are split into (by popularity), on top of the
        shared layers of the init and the base system.
      '';
    };

    user = mkOption {
      type = types.str;
      default = "root";
      description = ''
        OCI `User`: who the init runs as. The boot steps (runtime directories, keys, the GPU
        setup) need root; a non-root init skips them with warnings.
      '';
    };

    workingDir = mkOption {
      type = types.str;
      default = "/root";
      description = "OCI `WorkingDir`.";
    };

    env = mkOption {
      type = types.attrsOf types.str;
      default = imageLib.defaultEnv {
        localeArchive = "${pkgs.glibcLocales}/lib/locale/locale-archive";
      };
      defaultText = literalExpression "CA bundle, HOME, locale, LD_LIBRARY_PATH, PATH (FHS directories), TERM, USER";
      description = ''
        The image environment (OCI `Env`). Setting it replaces the defaults; to add to them use
        `extraEnv`. The resulting PATH must keep /usr/bin and /bin. `NIX2GPU_CONFIG` is always
        added: it points the init at its configuration.
      '';
    };

    extraEnv = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "Variables added to `env` (one given in both takes this value).";
    };

    labels = mkOption {
      type = types.attrsOf types.str;
      default = imageLib.defaultLabels;
      description = "OCI `Labels`. Setting it replaces the defaults; to add to them use `extraLabels`.";
    };

    extraLabels = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "Labels added to `labels`.";
    };

    exposedPorts = mkOption {
      type = types.attrsOf types.anything;
      default = imageLib.defaultExposedPorts config.nix2gpu;
      defaultText = literalExpression ''{ "22/tcp" = { }; } (sshd's port; and the health endpoint's when set)'';
      description = "OCI `ExposedPorts`.";
    };

    copyToRoot = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = "Derivations whose contents are copied to the image root.";
    };

    systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      description = ''
        Packages of the image: linked into /bin, /sbin, /lib, /libexec and /share, which are on
        PATH.
      '';
    };

    basePackages = mkOption {
      type = types.listOf types.package;
      default = with pkgs; [
        bashInteractive
        cacert
        coreutils
        curl
        findutils
        gawk
        gnugrep
        gnused
        gnutar
        gzip
        iproute2
        iputils
        less
        nano
        procps
        shadow
        util-linux
        which
        xz
      ];
      defaultText = literalExpression "a shell, coreutils and the usual command-line tools";
      description = ''
        The packages every image has, besides `systemPackages` (which nix2gpu also filled with
        compilers, Python and a Home Manager profile: add what you need there). `[ ]` makes a
        minimal image.
      '';
    };

    initializeNixDatabase = mkOption {
      type = types.bool;
      default = true;
      description = "Register the image's store paths in a Nix database, so that `nix` works inside.";
    };

    nixConfig = mkOption {
      type = types.lines;
      default = ''
        sandbox = false
        build-users-group =
        experimental-features = nix-command flakes
        trusted-users = root
        max-jobs = auto
        cores = 0
        substituters = https://cache.nixos.org https://cuda-maintainers.cachix.org
        trusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= cuda-maintainers.cachix.org-1:0dq3bujKpuEPMCX6U4WylrUDZ9JyUG0VpVZa7CNfq5E=
      '';
      description = "/etc/nix/nix.conf.";
    };

    registries = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ghcr.io/my-org" ];
      description = "Where `copyToRegistry` and `copyToGithub` push the image (`<registry>/<name>:<tag>`).";
    };

    meta = mkOption {
      type = types.lazyAttrsOf types.raw;
      default = { };
      description = "`meta` of the image derivation.";
    };

    passthru = mkOption {
      type = types.lazyAttrsOf types.raw;
      default = { };
      description = "Attributes added to the image derivation's passthru (next to the apps).";
    };

    builtImage = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      description = "The image as nix2container builds it (what the apps copy).";
    };

    image = mkOption {
      type = types.package;
      readOnly = true;
      internal = true;
      description = "The image, with the apps in its passthru.";
    };
  };

  config.builtImage = built;

  config.image =
    let
      failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
      image = built.overrideAttrs (old: {
        passthru = (old.passthru or { }) // config.apps // config.passthru;
      });
    in
    if failed != [ ] then
      throw "nix2gpu.${name}:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failed}"
    else
      lib.foldr (warning: lib.warn "nix2gpu.${name}: ${warning}") image config.warnings;
}

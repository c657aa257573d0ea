# The OCI configuration of a nix2gpu image (Entrypoint, Env, Labels, ExposedPorts, User,
# WorkingDir) and the defaults of the options that feed it. Pure, like config.nix: builtins
# only, so that the tests evaluate it without nixpkgs.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    match
    split
    ;

  fail = message: throw "nix2gpu: ${message}";

  # The FHS directories stay on PATH: driver tools injected by the NVIDIA toolkit land in
  # /usr/bin, and the image's own packages (the profile, copied to the root) in /bin and /sbin.
  defaultPath = [
    "/root/.nix-profile/bin"
    "/nix/var/nix/profiles/default/bin"
    "/usr/local/nvidia/bin"
    "/usr/local/cuda/bin"
    "/usr/local/sbin"
    "/usr/local/bin"
    "/usr/sbin"
    "/usr/bin"
    "/sbin"
    "/bin"
  ];
  requiredPath = [
    "/usr/bin"
    "/bin"
  ];
  caBundle = "/etc/ssl/certs/ca-bundle.crt";

  # "0.0.0.0:9100" or "[::]:9100" -> "9100"
  portOf = listen: builtins.head (match ".*:([0-9]+)" listen);
in
{
  inherit defaultPath;

  # The default of the `env` option. `localeArchive` is glibcLocales' locale-archive.
  defaultEnv =
    { localeArchive }:
    {
      CURL_CA_BUNDLE = caBundle;
      HOME = "/root";
      LANG = "en_US.UTF-8";
      LC_ALL = "en_US.UTF-8";
      LD_LIBRARY_PATH = "/lib/x86_64-linux-gnu:/usr/lib64:/usr/lib";
      LOCALE_ARCHIVE = localeArchive;
      NIXPKGS_ALLOW_UNFREE = "1";
      NIX_PATH = "nixpkgs=/nix/var/nix/profiles/per-user/root/channels";
      NIX_SSL_CERT_FILE = caBundle;
      PATH = concatStringsSep ":" defaultPath;
      SSL_CERT_FILE = caBundle;
      TERM = "xterm-256color";
      USER = "root";
    };

  # The default of the `labels` option.
  defaultLabels = {
    "ai.vast.gpu" = "required";
    "ai.vast.runtime" = "nix2gpu";
    "org.opencontainers.image.description" = "Nix-based GPU container";
  };

  # The default of the `exposedPorts` option: sshd's port unless ssh is switched off, and the
  # health endpoint's port when it is set.
  defaultExposedPorts =
    nix2gpu:
    let
      ssh = nix2gpu.ssh or { };
      listen = (nix2gpu.health or { }).listen or null;
    in
    (if (ssh.enable or "auto") == false then { } else { "${toString (ssh.port or 22)}/tcp" = { }; })
    // (if listen == null then { } else { "${portOf listen}/tcp" = { }; });

  # The image configuration. `env // extraEnv` is the environment (a variable in extraEnv
  # replaces the one in env); its PATH must keep /usr/bin and /bin.
  ociConfig =
    {
      # The nix2gpu-init executable.
      init,
      # Where the image holds the init's configuration.
      configFile,
      env,
      extraEnv ? { },
      labels,
      extraLabels ? { },
      exposedPorts,
      user,
      workingDir,
    }:
    let
      environment = env // extraEnv;
      path = filter builtins.isString (split ":" (environment.PATH or ""));
      missing = filter (dir: !(elem dir path)) requiredPath;
      badNames = filter (name: match "[A-Za-z_][A-Za-z0-9_]*" name == null) (attrNames environment);
    in
    if badNames != [ ] then
      fail "env: `${builtins.head badNames}` is not a valid environment variable name"
    else if missing != [ ] then
      fail "the image PATH must keep ${concatStringsSep " and " missing} (the FHS directories, where the image's packages and the injected driver tools are): PATH=${
        environment.PATH or ""
      }"
    else if environment ? NIX2GPU_CONFIG then
      fail "env: NIX2GPU_CONFIG is set by the image (${configFile})"
    else
      {
        Entrypoint = [ init ];
        Env = map (name: "${name}=${environment.${name}}") (attrNames environment) ++ [
          "NIX2GPU_CONFIG=${configFile}"
        ];
        Labels = labels // extraLabels;
        ExposedPorts = exposedPorts;
        User = user;
        WorkingDir = workingDir;
      };
}

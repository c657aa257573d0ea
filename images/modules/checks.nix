# Assertions and warnings (evaluated when the image is), and nix2gpu's options that are gone,
# each with what replaces it.
{
  lib,
  pkgs,
  name,
  ...
}:
let
  inherit (lib) mkOption types;
in
{
  imports = [
    (lib.mkRemovedOptionModule [ "sshdConfig" ] ''
      nix2gpu-init writes sshd's configuration itself: set nix2gpu.ssh instead (port,
      password_auth, authorized_keys_file, root_password_file, allow_empty_password).
    '')
    (lib.mkRemovedOptionModule [ "nimiSettings" ] ''
      nix2gpu-init replaces Nimi: restarts are processes.<name>.availability, the shutdown
      grace period nix2gpu.shutdown_timeout_seconds, logs go to stdout.
    '')
    (lib.mkRemovedOptionModule [ "home" ] ''
      Home Manager is not built in: add its activation package to systemPackages and run it
      from extraStartupScript.
    '')
    (lib.mkRemovedOptionModule [ "age" ] ''
      agenix is not built in: decrypt secrets in extraStartupScript (with rage from
      systemPackages), or mount them at run time.
    '')
  ];

  options = {
    assertions = mkOption {
      type = types.listOf types.raw;
      default = [ ];
      internal = true;
      description = "`{ assertion; message; }`: the image does not evaluate while one is false.";
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
      internal = true;
      description = "Printed when the image is evaluated.";
    };
  };

  config.assertions = [
    {
      assertion = builtins.match "[a-z0-9]([a-z0-9._-]*[a-z0-9])?" name != null;
      message = "`${name}` is not a valid image name: lower-case letters, digits and . _ - (not first or last)";
    }
    {
      assertion = pkgs.stdenv.hostPlatform.isx86_64;
      message = "nix2gpu images are x86_64-linux (the driver directories and the loader path are)";
    }
  ];
}

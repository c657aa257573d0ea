# The base system every image shares: the FHS directories, /etc, the loader link, the CA
# bundle and /bin/sh. It depends on nothing image-specific, so it is one layer shared by all
# images of a flake.
#
# Fixed from nix2gpu's: the CA links are absolute (nix2gpu's pointed at a relative path that
# does not exist), /etc/group lists members, /bin/sh is bashInteractive (not the build's
# bash), /var/run is a link to /run, and no directory is named after one driver version.
{
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  accounts = import ../lib/accounts.nix {
    shell = "${pkgs.bashInteractive}/bin/bash";
    nologin = "${pkgs.shadow}/bin/nologin";
  };

  # The loader foreign (non-Nix) programs ask for, such as the host's nvidia-smi, at the path
  # they ask for it (/lib64/ld-linux-x86-64.so.2).
  loader = pkgs.stdenv.cc.bintools.dynamicLinker;

  # Where the NVIDIA toolkit and other runtimes mount driver files and libraries.
  driverDirectories = [
    "/lib/x86_64-linux-gnu"
    "/usr/lib/x86_64-linux-gnu"
    "/usr/lib64"
    "/usr/lib32"
    "/usr/local/lib"
    "/usr/local/lib64"
  ];

  ldSoConf = ''
    include /etc/ld.so.conf.d/*.conf
    ${lib.concatStringsSep "\n" (driverDirectories ++ [ "/usr/lib" "/lib64" "/lib" ])}
  '';

  root = pkgs.runCommand "nix2gpu-base-system" {
    passwd = accounts.passwd;
    group = accounts.group;
    shadow = accounts.shadow;
    ldSoConf = ldSoConf;
    passAsFile = [ "passwd" "group" "shadow" "ldSoConf" ];
  } ''
    mkdir -p "$out"/{bin,sbin,lib,lib64,etc,root,home,run,tmp,srv,opt}
    mkdir -p "$out"/usr/{bin,sbin,lib,local/bin,local/sbin}
    mkdir -p "$out"/var/{log,cache,lib,empty,tmp}
    mkdir -p "$out"/etc/{ssh,ld.so.conf.d,ssl/certs}
    mkdir -p ${lib.concatMapStringsSep " " (dir: "\"$out\"${dir}") driverDirectories}
    ln -s ../run "$out"/var/run

    cp "$passwdPath" "$out"/etc/passwd
    cp "$groupPath" "$out"/etc/group
    cp "$shadowPath" "$out"/etc/shadow
    cp "$ldSoConfPath" "$out"/etc/ld.so.conf
    printf '%s\n' ${lib.escapeShellArgs driverDirectories} > "$out"/etc/ld.so.conf.d/nvidia.conf

    cat > "$out"/etc/nsswitch.conf <<'EOF'
    passwd:    files
    group:     files
    shadow:    files
    hosts:     files dns
    networks:  files
    EOF
    cat > "$out"/etc/hosts <<'EOF'
    127.0.0.1   localhost
    ::1         localhost
    EOF
    cat > "$out"/etc/os-release <<'EOF'
    NAME="nix2gpu"
    ID=nix2gpu
    PRETTY_NAME="nix2gpu GPU container"
    EOF
    printf 'LANG=en_US.UTF-8\nLC_ALL=en_US.UTF-8\n' > "$out"/etc/locale.conf

    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt "$out"/etc/ssl/certs/ca-bundle.crt
    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt "$out"/etc/ssl/certs/ca-certificates.crt
    ln -s ${loader} "$out"/lib64/${baseNameOf loader}
    ln -s ${pkgs.bashInteractive}/bin/bash "$out"/bin/bash
    ln -s ${pkgs.bashInteractive}/bin/bash "$out"/bin/sh
    ln -s ${pkgs.coreutils}/bin/env "$out"/usr/bin/env
    ln -s ${pkgs.glibc.bin}/bin/ldconfig "$out"/sbin/ldconfig
  '';
in
{
  options.baseSystem = mkOption {
    type = types.raw;
    readOnly = true;
    internal = true;
    description = "The base system's root and the modes its layer gives paths (the store keeps none).";
  };

  config.baseSystem = {
    inherit root;
    perms = [
      {
        path = root;
        regex = "/tmp$";
        mode = "1777";
      }
      {
        path = root;
        regex = "/etc/shadow$";
        mode = "0640";
      }
    ];
  };
}

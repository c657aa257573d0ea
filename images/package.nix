# nix2gpu-init, linked statically against glibc: PID 1 of the image must not depend on the
# image's own glibc (or any), and it is one store path with no references, so its layer is
# the same in every image.
#
# `-C target-feature=+crt-static` reaches the init only: buildRustPackage always passes
# `--target` to cargo, and cargo then keeps RUSTFLAGS away from build scripts and proc-macros
# (which cannot be static). The same split as `cargo xtask build-static`.
{
  lib,
  rustPlatform,
  glibc,
  file,
}:
let
  root = ../.;
  manifest = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
in
rustPlatform.buildRustPackage {
  pname = manifest.package.name;
  inherit (manifest.package) version;

  # The workspace: cargo wants every member's manifest, even to build one package.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/Cargo.toml")
      (root + "/Cargo.lock")
      (root + "/src")
      (root + "/xtask")
      (root + "/init-tests")
    ];
  };
  cargoLock.lockFile = root + "/Cargo.lock";

  cargoBuildFlags = [
    "--package"
    "nix2gpu-init"
    "--bin"
    "nix2gpu-init"
  ];
  # Not position-independent either, as there (see .cargo/config.toml).
  env.RUSTFLAGS = "-C target-feature=+crt-static -C relocation-model=static";
  buildInputs = [ glibc.static ];
  nativeBuildInputs = [ file ];

  # The tests run the init as PID 1 in namespaces (root): `cargo xtask test`, not the sandbox.
  doCheck = false;

  # As `cargo xtask build-static` does: fail unless the result is static.
  postInstall = ''
    file --brief "$out/bin/nix2gpu-init" | grep -q static
  '';

  meta = {
    description = manifest.package.description;
    license = lib.licenses.mit;
    mainProgram = "nix2gpu-init";
    platforms = lib.platforms.linux;
  };
}

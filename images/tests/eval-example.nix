# The pure part of an example, for the tests (init-tests/tests/nix.rs): the configuration
# ../lib/config.nix makes of it, evaluated without nixpkgs. Only the settings the
# configuration is made of are read; the module arguments that need nixpkgs are values that
# fail when used, so an example whose configuration depended on them fails here.
{ example }:
let
  module = import example;
  unavailable = argument: throw "`${argument}` is not available: the examples' configurations are evaluated without nixpkgs";
  settings =
    if builtins.isFunction module then
      module {
        pkgs = unavailable "pkgs";
        lib = unavailable "lib";
        config = unavailable "config";
        name = builtins.replaceStrings [ ".nix" ] [ "" ] (baseNameOf example);
      }
    else
      module;
  mkConfig = import ../lib/config.nix;
in
mkConfig (builtins.intersectAttrs (builtins.functionArgs mkConfig) settings)

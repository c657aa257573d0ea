# The configuration nix2gpu-init reads at boot (/etc/nix2gpu/config.json), computed from the
# settings of one image.
#
# Pure on purpose: builtins only, no nixpkgs. The flake module calls this function with the
# evaluated options, and the tests call it on the examples with `nix-instantiate --eval`, on
# machines that have no nixpkgs. The argument names are the option names of
# `perSystem.nix2gpu.<name>`, so an example's settings can be passed as they are.
#
# What it does beyond passing settings through:
# - NixOS modular services (`services.<name>.process.argv`) become processes with that argv as
#   `entrypoint`; sub-services become `<parent>-<child>`.
# - `processes.<name>` may add settings (depends_on, probes, availability, ...) to the process of
#   the service of the same name.
# - `extraStartupScript` becomes one one-shot process, `startup`, run by bash with errexit,
#   nounset and pipefail (as nix2gpu's writeShellApplication ran it); every other process and
#   service starts after it has completed successfully. If it fails, they are skipped and the
#   built-in nodes (sshd, ...) stay up, so the container can be entered to see why.
# - nix2gpu's `tailscale = { enable; authKey; }` becomes `nix2gpu.tailscale`, the auth key as a
#   *file* (`auth_key_file`): nix2gpu passed the path itself as the key.
{
  # process-compose-style processes: passed through; `nix2gpu-init check` validates them.
  processes ? { },
  # Evaluated modular services: <name> = { process.argv = [ ... ]; services = { ... }; }.
  services ? { },
  # Directories holding the services' configData, by process name (built by the flake module);
  # such a service gets XDG_CONFIG_HOME pointing there, as under nix2gpu's supervisor.
  serviceConfigDirs ? { },
  # Shell text run once, before every process and service.
  extraStartupScript ? "",
  # The `nix2gpu:` section (gpu, ssh, tailscale, health, log, ...): passed through.
  nix2gpu ? { },
  # nix2gpu's tailscale option.
  tailscale ? { },
  # Other top-level keys of the configuration (log_level, environment, shell, ...).
  extraConfig ? { },
}:
let
  inherit (builtins)
    attrNames
    concatLists
    filter
    isList
    isString
    listToAttrs
    mapAttrs
    replaceStrings
    ;

  mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);

  fail = message: throw "nix2gpu: ${message}";

  # nix2gpu-init expands `$VAR` and `${VAR}` in `entrypoint` items; a modular service's argv and
  # the startup script are literal text, so every `$` is doubled (`$$` is a literal `$`).
  literal = replaceStrings [ "$" ] [ "$$" ];

  startupName = "startup";
  hasStartup = extraStartupScript != "";

  startupProcess = {
    description = "extraStartupScript";
    entrypoint = [
      "/bin/bash"
      "-euo"
      "pipefail"
      "-c"
      (literal extraStartupScript)
      startupName
    ];
  };

  # One modular service and its sub-services, as a list of { name; value; } processes.
  serviceProcesses =
    prefix: option: name: service:
    let
      processName = prefix + name;
      where = "${option}.${name}";
      argv = service.process.argv or (fail "${where}: a service needs `process.argv`");
      configDir = serviceConfigDirs.${processName} or null;
    in
    if !(isList argv) || argv == [ ] || !(builtins.all isString argv) then
      fail "${where}.process.argv must be a non-empty list of strings"
    else
      [
        {
          name = processName;
          value = {
            entrypoint = map literal argv;
          }
          // (if configDir == null then { } else { environment = [ "XDG_CONFIG_HOME=${configDir}" ]; });
        }
      ]
      ++ concatLists (
        mapAttrsToList (serviceProcesses "${processName}-" "${where}.services") (service.services or { })
      );

  translatedList = concatLists (mapAttrsToList (serviceProcesses "" "services") services);

  translated =
    let
      names = map (p: p.name) translatedList;
      repeated = filter (n: builtins.length (filter (m: m == n) names) > 1) names;
    in
    if repeated != [ ] then
      fail "two services both become the process `${builtins.head repeated}` (sub-services are named <parent>-<child>)"
    else
      listToAttrs translatedList;

  # `processes.<name>` over the process of the service of the same name: it may add settings,
  # but the argv is the service's.
  combine =
    name: service: process:
    if process ? command || process ? entrypoint then
      fail "processes.${name} sets `${
        if process ? command then "command" else "entrypoint"
      }`, but the service `${name}` already gives its argv (process.argv); drop one of them"
    else
      let
        environment = (service.environment or [ ]) ++ (process.environment or [ ]);
      in
      service // process // (if environment == [ ] then { } else { inherit environment; });

  combined =
    processes
    // mapAttrs (
      name: service: if processes ? ${name} then combine name service processes.${name} else service
    ) translated;

  afterStartup =
    process:
    process
    // {
      depends_on = {
        ${startupName}.condition = "process_completed_successfully";
      }
      // (process.depends_on or { });
    };

  allProcesses =
    if !hasStartup then
      combined
    else if combined ? ${startupName} then
      fail "`${startupName}` is the process that runs extraStartupScript; name your process or service differently"
    else
      mapAttrs (_: afterStartup) combined // { ${startupName} = startupProcess; };

  tailscaleSettings =
    if tailscale.enable or false then
      { enable = true; }
      // (
        if (tailscale.authKey or "") == "" then { } else { auth_key_file = tailscale.authKey; }
      )
    else
      { };

  nix2gpuSection =
    if tailscaleSettings == { } then
      nix2gpu
    else
      nix2gpu // { tailscale = tailscaleSettings // (nix2gpu.tailscale or { }); };

  ownKeys = filter (key: extraConfig ? ${key}) [
    "processes"
    "nix2gpu"
  ];
in
if ownKeys != [ ] then
  fail "extraConfig.${builtins.head ownKeys}: set it through the `${builtins.head ownKeys}` option instead"
else
  extraConfig
  // {
    processes = allProcesses;
    nix2gpu = nix2gpuSection;
  }

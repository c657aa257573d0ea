# The smallest image: nix2gpu-init as PID 1, CUDA, a shell and the usual tools, and the
# init's built-in nodes with their defaults. No processes: with a terminal
# (`nix run .#minimal.shell`) the init runs a shell; without one it keeps the built-in nodes
# up until the container is stopped.
{ }

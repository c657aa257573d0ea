//! Several config files make one configuration (`--config a.yaml --config b.yaml`).

use super::{Config, GpuSettings, Nix2gpu, SshSettings, TailscaleSettings};

/// Sets each named `Option` field of `$ours` that `$later` sets (a later file's setting wins).
/// The struct pattern makes the compiler list a field that was forgotten here.
macro_rules! overlay {
    ($ours:expr, $later:ident, $settings:ident { $($field:ident),+ $(,)? }) => {{
        let $settings { $($field),+ } = $later;
        $( if $field.is_some() { $ours.$field = $field; } )+
    }};
}

impl Config {
    /// Overlays `later` on `self`, as the files are given on the command line. The rules:
    /// - a setting `later` sets wins; one it leaves out keeps the earlier value (settings of
    ///   `nix2gpu:` are merged one by one, `shell` is replaced whole);
    /// - the top-level `environment` lists are concatenated, so an entry of `later` overrides an
    ///   earlier entry for the same variable (later entries win when the environment is built);
    /// - `processes` are merged by name: a process defined again replaces the earlier definition
    ///   whole (no field-by-field merge, so what a file says about a process is all there is);
    /// - the provenance of both is kept, so errors still name the file they come from.
    pub fn merge(&mut self, later: Config) {
        let Config {
            version,
            name,
            log_level,
            log_length,
            log_location,
            ordered_shutdown,
            is_tui_disabled,
            environment,
            processes,
            shell,
            nix2gpu,
            provenance,
        } = later;
        self.version = version.or(self.version.take());
        self.name = name.or(self.name.take());
        self.log_level = log_level.or(self.log_level);
        self.log_length = log_length.or(self.log_length);
        self.log_location = log_location.or(self.log_location.take());
        self.ordered_shutdown = ordered_shutdown.or(self.ordered_shutdown);
        self.is_tui_disabled = is_tui_disabled.or(self.is_tui_disabled);
        self.provenance.append(provenance, self.environment.len());
        self.environment.extend(environment);
        self.processes.extend(processes);
        self.shell = shell.or(self.shell.take());
        self.merge_nix2gpu(nix2gpu);
    }

    fn merge_nix2gpu(&mut self, later: Nix2gpu) {
        let Nix2gpu { shutdown_timeout_seconds, forward_signals_to, log, health, gpu, ssh, tailscale } =
            later;
        let ours = &mut self.nix2gpu;
        ours.shutdown_timeout_seconds = shutdown_timeout_seconds.or(ours.shutdown_timeout_seconds);
        ours.forward_signals_to = forward_signals_to.or(ours.forward_signals_to);
        ours.log.format = log.format.or(ours.log.format);
        ours.log.timestamps = log.timestamps.or(ours.log.timestamps);
        ours.health.listen = health.listen.or(ours.health.listen.take());
        overlay!(
            ours.gpu,
            gpu,
            GpuSettings {
                enable,
                wait_seconds,
                patch_nvidia_smi,
                loader,
                driver_link_dir,
                library_dirs,
                required
            }
        );
        overlay!(
            ours.ssh,
            ssh,
            SshSettings {
                enable,
                port,
                authorized_keys_env,
                authorized_keys_file,
                root_password_file,
                password_auth,
                allow_empty_password,
                host_key_dir,
                sshd
            }
        );
        overlay!(
            ours.tailscale,
            tailscale,
            TailscaleSettings {
                enable,
                auth_key_file,
                auth_key_env,
                hostname,
                state_dir,
                socket,
                userspace_networking,
                ssh,
                tags,
                accept_routes,
                tailscaled
            }
        );
    }
}

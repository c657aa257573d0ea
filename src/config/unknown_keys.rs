//! The second pass: every key the schema does not know, each with a helpful message.
//!
//! serde stops at the first problem, so unknown keys are found here instead, by walking the
//! parsed document beside the JSON Schema that schemars derives from the config types. The known
//! keys are the schema's `properties`, the allowed extensions its `patternProperties` (`x-…` at
//! the top level and in a process): adding a field to a type is all it takes, and nothing can
//! drift. process-compose settings that nix2gpu-init deliberately lacks are listed in
//! [`UNSUPPORTED`] with the reason, so a process-compose file gets an explanation rather than a
//! bare "unknown key".

use serde_json::Value as Json;
use serde_yaml::Value;

use super::Config;
use super::locate::KeyPath;
use super::provenance::Issue;
use super::suggest;

/// A process-compose key nix2gpu-init does not implement, in the schema object named `scope`
/// (a `$defs` name; `Config` is the top level).
struct Unsupported {
    scope: &'static str,
    key: &'static str,
    /// Why, or what to do instead; empty when there is nothing useful to add.
    reason: &'static str,
}

const fn unsupported(scope: &'static str, key: &'static str, reason: &'static str) -> Unsupported {
    Unsupported { scope, key, reason }
}

const NO_TEMPLATES: &str = "there are no Go templates; use `environment` and `${VAR}`";
const STDOUT_LOGS: &str =
    "output goes to stdout (`docker logs`) as `NAME | line`, and to `nix2gpu-init logs`; see `nix2gpu.log`";

/// process-compose's settings that are deliberately not implemented.
const UNSUPPORTED: &[Unsupported] = &[
    unsupported("Config", "vars", NO_TEMPLATES),
    unsupported(
        "Config",
        "extends",
        "pass several --config files instead: later files override earlier ones",
    ),
    unsupported(
        "Config",
        "env_cmds",
        "nothing runs while the config loads; compute the value in the image or in the command",
    ),
    unsupported(
        "Config",
        "disable_env_expansion",
        "`${VAR}` is always expanded; write `$$` for a literal `$`",
    ),
    unsupported("Config", "is_strict", "nix2gpu-init is always strict: unknown keys are errors"),
    unsupported("Config", "log_configuration", STDOUT_LOGS),
    unsupported("Config", "log_format", "use `nix2gpu.log.format` (text or json)"),
    unsupported("Config", "mcp_server", "use `nix2gpu-init status` or the health endpoint"),
    unsupported("Shell", "elevated_shell_command", "there is no sudo; set `user` on the process instead"),
    unsupported("Shell", "elevated_shell_argument", "there is no sudo; set `user` on the process instead"),
    unsupported("Process", "namespace", "there are no namespaces: every process that is not `disabled` runs"),
    unsupported(
        "Process",
        "is_tty",
        "services run without a terminal; only the main process (`-- CMD`) gets one",
    ),
    unsupported("Process", "is_interactive", "only the main process (`-- CMD`) reads the terminal"),
    unsupported(
        "Process",
        "is_foreground",
        "there is no TUI; use `disabled: true` and `nix2gpu-init start NAME`",
    ),
    unsupported("Process", "is_elevated", "there is no sudo; set `user` instead"),
    unsupported(
        "Process",
        "is_daemon",
        "run the program in the foreground (most daemons have a flag for it)",
    ),
    unsupported(
        "Process",
        "launch_timeout_seconds",
        "it only applies to `is_daemon`, which is not supported",
    ),
    unsupported("Process", "is_disabled", "use `disabled: true`"),
    unsupported("Process", "vars", NO_TEMPLATES),
    unsupported("Process", "extends", "define the process whole; a later --config file may replace it"),
    unsupported("Process", "replicas", "define each copy as a process of its own"),
    unsupported("Process", "schedule", "there is no scheduler; loop in the command instead"),
    unsupported("Process", "watch", "there is no file watching; use `nix2gpu-init restart NAME`"),
    unsupported("Process", "monitor_for", "there is no output monitoring; use a `liveness_probe`"),
    unsupported(
        "Process",
        "monitor_silence_threshold",
        "there is no output monitoring; use a `liveness_probe`",
    ),
    unsupported("Process", "log_location", STDOUT_LOGS),
    unsupported("Process", "log_configuration", STDOUT_LOGS),
    unsupported("Process", "truncate_log", STDOUT_LOGS),
    unsupported("Process", "disable_ansi_colors", "output is passed on as the process writes it"),
    unsupported("Process", "is_dotenv_disabled", "no `.env` file is read unless `env_file` names it"),
    unsupported(
        "Process",
        "is_template_disabled",
        "there are no Go templates; only `${VAR}` is expanded (`$$` is a literal `$`)",
    ),
    unsupported("Process", "restart_policy", "use `availability.restart`"),
    unsupported("Process", "mcp", "there is no MCP server"),
    unsupported(
        "Shutdown",
        "parent_only",
        "the signal always goes to the whole process group, so children stop too",
    ),
    unsupported(
        "Shutdown",
        "send_keys",
        "services have no terminal; use `shutdown.command` or `shutdown.signal`",
    ),
    unsupported("HttpProbe", "headers", "requests carry only a Host header; use an `exec` probe for more"),
    unsupported("Availability", "exit_on_skipped", ""),
];

/// The JSON Schema of [`Config`] as JSON. Built for each use, not kept: it is needed when a
/// configuration is read (at boot, at a reload) and would otherwise stay in PID 1's memory for
/// good (150 KB); building it takes well under a millisecond.
pub(super) fn schema() -> Json {
    schemars::schema_for!(Config).to_value()
}

/// Every unknown or unsupported key in `document`, located at the key.
pub(super) fn find(document: &Value) -> Vec<Issue> {
    let root = &schema();
    let scope = root.get("title").and_then(Json::as_str);
    let mut issues = Vec::new();
    Walk { root, issues: &mut issues }.value(document, root, scope, &KeyPath::root());
    issues
}

/// The document walked beside its schema (`'s`); `issues` collects what does not fit.
struct Walk<'s, 'a> {
    root: &'s Json,
    issues: &'a mut Vec<Issue>,
}

impl<'s> Walk<'s, '_> {
    /// Checks `value` against `schema`, whose `$defs` name (if it has one) is `scope`.
    fn value(&mut self, value: &Value, schema: &'s Json, scope: Option<&'s str>, path: &KeyPath) {
        let (schema, scope) = self.resolve(schema, scope, value);
        match value {
            Value::Mapping(mapping) => self.mapping(mapping, schema, scope, path),
            Value::Sequence(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        self.value(item, item_schema, None, &path.index(index));
                    }
                }
            }
            Value::Tagged(tagged) => self.value(&tagged.value, schema, scope, path),
            _ => {}
        }
    }

    /// Follows `$ref`s, and picks the branch of an `anyOf`/`oneOf` that can hold `value` (an
    /// `Option<T>` is `anyOf: [T, null]`). Type mismatches are the typed pass's business.
    fn resolve(
        &self,
        mut schema: &'s Json,
        mut scope: Option<&'s str>,
        value: &Value,
    ) -> (&'s Json, Option<&'s str>) {
        for _ in 0..16 {
            if let Some(name) =
                schema.get("$ref").and_then(Json::as_str).and_then(|r| r.strip_prefix("#/$defs/"))
            {
                match self.root.get("$defs").and_then(|defs| defs.get(name)) {
                    Some(definition) => {
                        schema = definition;
                        scope = Some(name);
                        continue;
                    }
                    None => break,
                }
            }
            let branches = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Json::as_array);
            match branches.and_then(|branches| branches.iter().find(|b| self.can_hold(b, value))) {
                Some(branch) => schema = branch,
                None => break,
            }
        }
        (schema, scope)
    }

    /// Whether a branch (after `$ref`s) is a collection schema of `value`'s kind.
    fn can_hold(&self, branch: &'s Json, value: &Value) -> bool {
        let (branch, _) = self.resolve(branch, None, &Value::Null);
        match value {
            Value::Mapping(_) => {
                branch.get("properties").is_some() || branch.get("additionalProperties").is_some()
            }
            Value::Sequence(_) => branch.get("items").is_some(),
            _ => false,
        }
    }

    fn mapping(
        &mut self,
        mapping: &serde_yaml::Mapping,
        schema: &'s Json,
        scope: Option<&'s str>,
        path: &KeyPath,
    ) {
        // A struct has `properties` (and `additionalProperties: false`); a map of names
        // (`processes`, `depends_on`) has a schema for every value in `additionalProperties`.
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, value) in mapping {
            let Some(key) = key_text(key) else { continue };
            let child = path.key(&key);
            match (properties.and_then(|p| p.get(&key)), additional) {
                (Some(property), _) => self.value(value, property, None, &child),
                (None, _) if allowed_by_pattern(schema, &key) => {}
                (None, Some(additional)) => self.value(value, additional, None, &child),
                (None, None) => {
                    if let Some(properties) = properties {
                        let known = properties.keys().map(String::as_str).collect();
                        self.issues.push(Issue::key(child, unknown_key_message(&key, scope, known)));
                    }
                }
            }
        }
    }
}

/// Whether a `patternProperties` regex of `schema` matches `key` (the `x-` extensions).
fn allowed_by_pattern(schema: &Json, key: &str) -> bool {
    schema.get("patternProperties").and_then(Json::as_object).is_some_and(|patterns| {
        patterns.keys().any(|pattern| regex_lite::Regex::new(pattern).is_ok_and(|regex| regex.is_match(key)))
    })
}

/// A key as text, as serde reads string keys; collection keys have none (the typed pass
/// reports them).
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null => Some("null".into()),
        Value::Tagged(tagged) => key_text(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// Why `key` is not accepted in the object `scope`, whose keys are `known`.
fn unknown_key_message(key: &str, scope: Option<&str>, known: Vec<&str>) -> String {
    if let Some(entry) = UNSUPPORTED.iter().find(|u| Some(u.scope) == scope && u.key == key) {
        let reason = if entry.reason.is_empty() { String::new() } else { format!(": {}", entry.reason) };
        return format!("`{key}` is a process-compose setting nix2gpu-init does not support{reason}");
    }
    if key == "<<" {
        return "YAML merge keys (`<<`) are not supported: repeat the settings, or generate the file \
                (for example with Nix)"
            .into();
    }
    if let Some(suggestion) = suggest::closest(key, known.iter().copied()) {
        return format!("unknown key `{key}`; did you mean `{suggestion}`?");
    }
    let extension_hint = if key.starts_with("x-") {
        " (`x-` extension keys are allowed only at the top level and in a process)"
    } else {
        ""
    };
    format!("unknown key `{key}`{extension_hint}; expected one of: {}", known.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        let document: Value = serde_yaml::from_str(text).unwrap();
        find(&document).into_iter().map(|issue| issue.to_string()).collect()
    }

    #[test]
    fn every_unsupported_key_names_a_schema_object_that_lacks_it() {
        let root = &schema();
        let defs = root.get("$defs").unwrap();
        for entry in UNSUPPORTED {
            let object = if entry.scope == "Config" { root } else { defs.get(entry.scope).unwrap() };
            let properties = object.get("properties").unwrap().as_object().unwrap();
            assert!(
                !properties.contains_key(entry.key),
                "{}.{} is supported after all",
                entry.scope,
                entry.key
            );
        }
        assert_eq!(root.get("title").and_then(Json::as_str), Some("Config"));
    }

    #[test]
    fn typos_get_suggestions_everywhere() {
        let text = "log_levle: info\nprocesses:\n  web:\n    comand: x\n    readiness_probe:\n      http_get: {port: 1, pth: /}\n    depends_on:\n      db: {condtion: process_started}\nnix2gpu:\n  log: {formt: json}\n";
        assert_eq!(
            messages(text),
            [
                "log_levle: unknown key `log_levle`; did you mean `log_level`?",
                "processes.web.comand: unknown key `comand`; did you mean `command`?",
                "processes.web.readiness_probe.http_get.pth: unknown key `pth`; did you mean `path`?",
                "processes.web.depends_on.db.condtion: unknown key `condtion`; did you mean `condition`?",
                "nix2gpu.log.formt: unknown key `formt`; did you mean `format`?",
            ]
        );
    }

    #[test]
    fn unsupported_process_compose_keys_say_so() {
        let text = "vars: {a: 1}\nprocesses:\n  web:\n    command: x\n    is_tty: true\n    shutdown: {parent_only: true}\n    availability: {exit_on_skipped: true}\n";
        assert_eq!(
            messages(text),
            [
                "vars: `vars` is a process-compose setting nix2gpu-init does not support: there are no Go templates; use `environment` and `${VAR}`",
                "processes.web.is_tty: `is_tty` is a process-compose setting nix2gpu-init does not support: services run without a terminal; only the main process (`-- CMD`) gets one",
                "processes.web.shutdown.parent_only: `parent_only` is a process-compose setting nix2gpu-init does not support: the signal always goes to the whole process group, so children stop too",
                "processes.web.availability.exit_on_skipped: `exit_on_skipped` is a process-compose setting nix2gpu-init does not support",
            ]
        );
    }

    #[test]
    fn extensions_are_allowed_at_the_top_and_in_processes_only() {
        let text = "x-common: &c {a: 1}\nprocesses:\n  web:\n    x-note: hi\n    command: x\n    shutdown: {x-no: 1}\n";
        let found = messages(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("processes.web.shutdown.x-no: unknown key `x-no` (`x-` extension keys are allowed only at the top level and in a process); expected one of: command, signal, timeout_seconds"), "{found:?}");
    }

    #[test]
    fn merge_keys_and_odd_keys() {
        let text = "processes:\n  web:\n    <<: {command: x}\n    1: 2\n    [a]: b\n";
        assert_eq!(
            messages(text)[0],
            "processes.web.<<: YAML merge keys (`<<`) are not supported: repeat the settings, or generate the file (for example with Nix)"
        );
        assert!(messages(text)[1].starts_with("processes.web.1: unknown key `1`; expected one of: "));
        assert_eq!(messages(text).len(), 2);
    }

    #[test]
    fn wrong_shapes_are_left_to_the_typed_pass() {
        assert!(messages("processes: [a, b]\nenvironment: {a: 1}\nnix2gpu: 3\n").is_empty());
        assert!(messages("- a\n- b\n").is_empty());
    }
}

//! `${VAR}` expansion, as process-compose does it (the basics of drone/envsubst).

use std::collections::BTreeMap;

/// Expands environment variables in `text`, looking them up in `vars`.
///
/// | Written            | Becomes                                                      |
/// |--------------------|--------------------------------------------------------------|
/// | `$VAR`, `${VAR}`   | the value of `VAR`; empty if it is unset                     |
/// | `${VAR:-default}`  | the value of `VAR`, or `default` if it is unset or empty     |
/// | `${VAR-default}`   | the value of `VAR`, or `default` if it is unset              |
/// | `$$`               | a literal `$`                                                |
///
/// A variable name is a letter or `_` followed by letters, digits and `_`. A `$` followed by
/// anything else (`$1`, `$(...)`, a space, the end) is kept as it is, so the shell still sees
/// it; `$NAME`, though, is always expanded here, before the shell runs: write `$$NAME` to leave
/// `$NAME` to the shell (for example a variable the command itself sets). `default` may itself
/// contain `$VAR`s. Other `${...}` forms (`${VAR^^}`, `${VAR%suffix}`, …) and an unclosed `${`
/// are errors rather than silently kept.
///
/// Expanded: `command`, `entrypoint` items, `environment` values (each entry sees the ones
/// before it: `PATH=/opt/bin:$PATH` extends the inherited PATH), `working_dir`, probe commands,
/// probe `host`, `port` and `path`, and `shutdown.command`. Variables come from the process's
/// environment: the init's own, then the top-level `environment`, then `env_file`, then the
/// process's `environment`, later ones winning.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        rest = if let Some(after_escape) = after.strip_prefix('$') {
            out.push('$');
            after_escape
        } else if let Some(braced) = after.strip_prefix('{') {
            let (body, after_brace) = split_braced(braced)?;
            out.push_str(&braced_value(body, vars)?);
            after_brace
        } else {
            let name_len = name_length(after);
            match after.get(..name_len).filter(|name| !name.is_empty()) {
                Some(name) => out.push_str(vars.get(name).map_or("", String::as_str)),
                None => out.push('$'),
            }
            &after[name_len..]
        };
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits `text` (what follows `${`) at its closing `}`, minding nested `${…}` in a default.
fn split_braced(text: &str) -> Result<(&str, &str), String> {
    let mut depth = 0usize;
    let mut previous = None;
    for (index, c) in text.char_indices() {
        match c {
            '{' if previous == Some('$') => depth += 1,
            '}' if depth == 0 => return Ok((&text[..index], &text[index + 1..])),
            '}' => depth -= 1,
            _ => {}
        }
        previous = Some(c);
    }
    Err(format!("unclosed `${{{text}`: add the closing `}}`, or write `$$` for a literal `$`"))
}

/// The value of `${body}`.
fn braced_value(body: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let name_len = name_length(body);
    let (name, operator) = body.split_at(name_len);
    let value = vars.get(name).filter(|_| !name.is_empty());
    if operator.is_empty() && !name.is_empty() {
        return Ok(value.cloned().unwrap_or_default());
    }
    if let Some(default) = operator.strip_prefix(":-").filter(|_| !name.is_empty()) {
        return match value.filter(|v| !v.is_empty()) {
            Some(value) => Ok(value.clone()),
            None => expand(default, vars),
        };
    }
    if let Some(default) = operator.strip_prefix('-').filter(|_| !name.is_empty()) {
        return match value {
            Some(value) => Ok(value.clone()),
            None => expand(default, vars),
        };
    }
    Err(format!(
        "unsupported expansion `${{{body}}}`: only $VAR, ${{VAR}}, ${{VAR:-default}}, ${{VAR-default}} \
         and $$ (a literal `$`) are supported"
    ))
}

/// The length in bytes of the variable name at the start of `text` (0 if there is none).
fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars.find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric())).map_or(text.len(), |(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("HOME", "/root"), ("EMPTY", ""), ("PORT", "8080"), ("A_1", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(text: &str) -> String {
        expand(text, &vars()).unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(ok("$HOME/bin"), "/root/bin");
        assert_eq!(ok("${HOME}bin"), "/rootbin");
        assert_eq!(ok("$A_1.$A_1"), "x.x");
        assert_eq!(ok("-p $PORT -x"), "-p 8080 -x");
        assert_eq!(ok("\u{e9}$HOME\u{e9}"), "\u{e9}/root\u{e9}");
    }

    #[test]
    fn unset_variables_are_empty() {
        assert_eq!(ok("[$NOPE]"), "[]");
        assert_eq!(ok("[${NOPE}]"), "[]");
    }

    #[test]
    fn defaults() {
        assert_eq!(ok("${NOPE:-8000}"), "8000");
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("${PORT:-1}"), "8080");
        assert_eq!(ok("${NOPE:-$HOME/x}"), "/root/x");
        assert_eq!(ok("${NOPE:-${PORT}}"), "8080");
        assert_eq!(ok("${NOPE:-}"), "");
    }

    #[test]
    fn dollars_that_are_not_variables_stay() {
        assert_eq!(ok("$$HOME"), "$HOME");
        assert_eq!(ok("cost: $$5"), "cost: $5");
        assert_eq!(ok("awk '{print $1}'"), "awk '{print $1}'");
        assert_eq!(ok("$(date) $ end$"), "$(date) $ end$");
        assert_eq!(ok("$$$$"), "$$");
        assert_eq!(ok(""), "");
    }

    #[test]
    fn bad_forms_are_errors() {
        assert_eq!(
            expand("${HOME", &vars()).unwrap_err(),
            "unclosed `${HOME`: add the closing `}`, or write `$$` for a literal `$`"
        );
        assert!(expand("${HOME^^}", &vars()).unwrap_err().starts_with("unsupported expansion `${HOME^^}`"));
        assert!(expand("${}", &vars()).unwrap_err().starts_with("unsupported expansion `${}`"));
        assert!(expand("${1}", &vars()).is_err());
        assert!(expand("${NOPE:-${X}", &vars()).is_err());
    }
}

//! `--format` as docker and podman take it: `table` (the default), `json`, a Go
//! template rendered once per row, or `table TEMPLATE` (the rows laid out in columns
//! under a header derived from the fields). Templates are Go's text/template, run by
//! the `gotmpl` crate, with docker's extra functions (`json`, `upper`, `join`, ...).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use gotmpl::{MissingKey, Template, TemplateError, Value};

/// What `--format` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// racker's own table.
    #[default]
    Table,
    /// One JSON object per line (or one document, where racker prints one).
    Json,
    /// A Go template; `table` lays its rows out in columns under a header.
    Template { table: bool, text: String },
}

impl std::str::FromStr for Format {
    type Err = std::convert::Infallible;

    /// Any text is a format: a template is checked when it is used, so that a bad one
    /// is racker's one-line error (exit 125) rather than clap's usage text.
    fn from_str(s: &str) -> Result<Format, Self::Err> {
        Ok(match s.trim() {
            "table" | "" => Format::Table,
            "json" => Format::Json,
            t => match t.strip_prefix("table ") {
                Some(rest) => Format::Template { table: true, text: rest.to_owned() },
                None => Format::Template { table: false, text: s.to_owned() },
            },
        })
    }
}

impl Format {
    pub fn is_json(&self) -> bool {
        *self == Format::Json
    }
}

/// A usage error of racker's own making (a bad template or filter): exit status 125,
/// as docker's.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses `text` as docker does: surrounding spaces trimmed, `\t` and `\n` written
/// out as two characters become a tab and a newline.
pub fn compile(text: &str) -> Result<Template, UsageError> {
    let source = text.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
    let funcs = functions().into_iter().map(|(name, f)| (name.to_owned(), f)).collect();
    Template::new("")
        .missing_key(MissingKey::Error)
        .funcs(funcs)
        .parse(&source)
        .map_err(|e| UsageError(format!("invalid format template {text:?}: {e}")))
}

/// Renders `template` against `data` (a JSON value: docker's field names).
pub fn render(template: &Template, data: &serde_json::Value) -> Result<String, UsageError> {
    let value = gotmpl::to_value(data).map_err(|e| UsageError(format!("format template data: {e}")))?;
    template.execute_to_string(&value).map_err(|e| UsageError(format!("executing the format template: {e}")))
}

/// Prints list rows as `format` asks. `rows` carry docker's field names; `headers`
/// names the column of each field (`ID` → `CONTAINER ID`) for `table TEMPLATE`;
/// `default_table` draws racker's own table.
pub fn print_rows(
    format: &Format,
    headers: &[(&str, &str)],
    rows: &[serde_json::Value],
    default_table: impl FnOnce() -> String,
) -> Result<()> {
    match format {
        Format::Table => out!("{}", default_table())?,
        Format::Json => {
            for row in rows {
                outln!("{row}")?;
            }
        }
        Format::Template { table, text } => out!("{}", render_rows(&compile(text)?, *table, headers, rows)?)?,
    }
    Ok(())
}

/// The rows through `template`, a line each, or as a table under its header.
pub fn render_rows(
    template: &Template,
    table: bool,
    headers: &[(&str, &str)],
    rows: &[serde_json::Value],
) -> Result<String, UsageError> {
    let lines = rows.iter().map(|row| render(template, row)).collect::<Result<Vec<_>, _>>()?;
    if table {
        let header = render(template, &header_data(headers, rows))?;
        return Ok(columns(&header, &lines));
    }
    Ok(lines.into_iter().map(|line| line + "\n").collect())
}

/// Prints one object (`version`, `info`, `system df`) through a template; `None` when
/// `format` is no template and the caller prints its own way.
pub fn print_one(format: &Format, data: &serde_json::Value) -> Result<Option<()>> {
    let Format::Template { table: _, text } = format else { return Ok(None) };
    outln!("{}", render(&compile(text)?, data)?)?;
    Ok(Some(()))
}

/// `inspect -f`: the template, or `None` for the JSON array (no flag, or `json`).
pub fn inspect_template(format: Option<&str>) -> Result<Option<Template>, UsageError> {
    match format.map(str::trim) {
        None | Some("json") | Some("") => Ok(None),
        Some(text) => compile(text).map(Some),
    }
}

/// `inspect`'s output: the objects as one JSON array, or the template rendered for each.
pub fn print_objects(template: Option<&Template>, objects: &[serde_json::Value]) -> Result<()> {
    match template {
        None => outln!("{}", serde_json::to_string_pretty(objects)?)?,
        Some(template) => {
            for object in objects {
                outln!("{}", render(template, object)?)?;
            }
        }
    }
    Ok(())
}

/// A time as Go prints one (`2024-05-01 10:00:00 +0000 UTC`): docker's `CreatedAt`.
pub fn go_time(rfc3339: Option<&str>) -> String {
    rfc3339
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// What a header row renders from: each field's column name, docker's where it has
/// one, else the field name in capitals, words apart (`VirtualSize` → `VIRTUAL SIZE`).
pub fn header_data(headers: &[(&str, &str)], rows: &[serde_json::Value]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for key in rows.iter().filter_map(serde_json::Value::as_object).flat_map(|o| o.keys()) {
        map.insert(key.clone(), header_of(key).into());
    }
    for (field, header) in headers {
        map.insert((*field).to_owned(), (*header).into());
    }
    serde_json::Value::Object(map)
}

/// `CreatedSince` → `CREATED SINCE`.
fn header_of(field: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if i > 0 && c.is_uppercase() && (chars[i - 1].is_lowercase() || next_lower) {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

/// The header and the rows, their tab-separated cells lined up as racker's tables.
fn columns(header: &str, rows: &[String]) -> String {
    let cells = |line: &str| line.split('\t').map(str::to_owned).collect::<Vec<String>>();
    let header = cells(header);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = rows.iter().flat_map(|r| r.lines().map(cells).collect::<Vec<_>>()).collect();
    crate::format::table(&header, &rows)
}

/// docker's template functions beside Go's own (`len`, `index`, `slice`, `printf`, ...).
fn functions() -> Vec<(&'static str, gotmpl::ValueFunc)> {
    fn string_arg<'a>(name: &str, args: &'a [Value], i: usize) -> gotmpl::Result<&'a str> {
        args.get(i)
            .and_then(Value::as_str)
            .ok_or_else(|| TemplateError::Exec(format!("{name}: argument {} must be a string", i + 1)))
    }
    fn one_string(name: &'static str, f: fn(&str) -> String) -> gotmpl::ValueFunc {
        Arc::new(move |args: &[Value]| {
            let text = match args {
                [Value::String(s)] => s.to_string(),
                [other] => other.to_string(),
                _ => return Err(TemplateError::Exec(format!("{name} takes one argument"))),
            };
            Ok(Value::String(f(&text).into()))
        })
    }
    vec![
        (
            "json",
            Arc::new(|args: &[Value]| {
                let [value] = args else { return Err(TemplateError::Exec("json takes one argument".into())) };
                Ok(Value::String(to_json(value).to_string().into()))
            }),
        ),
        ("upper", one_string("upper", str::to_uppercase)),
        ("lower", one_string("lower", str::to_lowercase)),
        ("title", one_string("title", title)),
        (
            "join",
            Arc::new(|args: &[Value]| {
                let sep = string_arg("join", args, 1)?;
                match args.first() {
                    Some(Value::List(items)) => {
                        Ok(Value::String(items.iter().map(Value::to_string).collect::<Vec<_>>().join(sep).into()))
                    }
                    Some(Value::String(s)) => Ok(Value::String(s.clone())),
                    _ => Err(TemplateError::Exec("join: the first argument must be a list".into())),
                }
            }),
        ),
        (
            "split",
            Arc::new(|args: &[Value]| {
                let (text, sep) = (string_arg("split", args, 0)?, string_arg("split", args, 1)?);
                Ok(Value::List(text.split(sep).map(|s| Value::String(s.into())).collect()))
            }),
        ),
        (
            "truncate",
            Arc::new(|args: &[Value]| {
                let text = string_arg("truncate", args, 0)?;
                let n = args
                    .get(1)
                    .and_then(Value::as_int)
                    .ok_or_else(|| TemplateError::Exec("truncate: the second argument must be a number".into()))?;
                Ok(Value::String(text.chars().take(usize::try_from(n).unwrap_or(0)).collect::<String>().into()))
            }),
        ),
        (
            "pad",
            Arc::new(|args: &[Value]| {
                let text = string_arg("pad", args, 0)?;
                let count = |i: usize| usize::try_from(args.get(i).and_then(Value::as_int).unwrap_or(0)).unwrap_or(0);
                Ok(Value::String(format!("{}{text}{}", " ".repeat(count(1)), " ".repeat(count(2))).into()))
            }),
        ),
    ]
}

/// Go's `strings.Title`: each word's first letter in capitals.
fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}

/// A template value as JSON, for the `json` function.
fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(n) => (*n).into(),
        Value::Uint(n) => (*n).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        Value::String(s) => s.as_ref().into(),
        Value::List(items) => items.iter().map(to_json).collect(),
        Value::Map(map) => {
            let object: BTreeMap<String, serde_json::Value> =
                map.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect();
            serde_json::Value::Object(object.into_iter().collect())
        }
        Value::Function(_) => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(text: &str, data: serde_json::Value) -> String {
        render(&compile(text).expect("parses"), &data).expect("renders")
    }

    #[test]
    fn formats_parse_as_docker_names_them() {
        assert_eq!("table".parse(), Ok(Format::Table));
        assert_eq!("json".parse(), Ok(Format::Json));
        assert_eq!(
            "table {{.ID}}\\t{{.Names}}".parse(),
            Ok(Format::Template { table: true, text: "{{.ID}}\\t{{.Names}}".into() })
        );
        assert_eq!("{{json .}}".parse(), Ok(Format::Template { table: false, text: "{{json .}}".into() }));
    }

    #[test]
    fn headers_come_from_the_fields() {
        let rows = [json!({"ID": "abc", "Names": "web", "RunningFor": "2 minutes ago"})];
        let headers = header_data(&[("ID", "CONTAINER ID")], &rows);
        let template = compile("{{.ID}}\\t{{.Names}}\\t{{.RunningFor}}").expect("parses");
        let header = render(&template, &headers).expect("renders");
        assert_eq!(header, "CONTAINER ID\tNAMES\tRUNNING FOR");
        let row = render(&template, &rows[0]).expect("renders");
        assert_eq!(
            columns(&header, &[row]),
            "CONTAINER ID   NAMES   RUNNING FOR\nabc            web     2 minutes ago\n"
        );
        assert_eq!(header_of("VirtualSize"), "VIRTUAL SIZE");
        assert_eq!(header_of("ID"), "ID");
        assert_eq!(header_of("CPUPerc"), "CPU PERC");
    }

    #[test]
    fn values_print_as_go_prints_them() {
        let data = json!({"Config": {"Cmd": ["sh", "-c", "true"], "Env": ["A=1"], "Labels": {"b": "2", "a": "1"}}});
        assert_eq!(run("{{.Config.Cmd}}", data.clone()), "[sh -c true]");
        assert_eq!(run("{{.Config.Labels}}", data.clone()), "map[a:1 b:2]");
        assert_eq!(run("{{json .Config.Cmd}}", data.clone()), r#"["sh","-c","true"]"#);
        assert_eq!(run("{{join .Config.Cmd \" \"}}", data.clone()), "sh -c true");
        assert_eq!(run("{{upper \"ab\"}} {{lower \"AB\"}} {{title \"ab cd\"}}", data.clone()), "AB ab Ab Cd");
        assert_eq!(run("{{truncate \"abcdef\" 3}}|{{pad \"x\" 1 2}}|", data.clone()), "abc| x  |");
        assert_eq!(run("{{range split \"a:b\" \":\"}}[{{.}}]{{end}}", data.clone()), "[a][b]");
        assert_eq!(run("{{index .Config.Labels \"a\"}}", data), "1");
    }

    #[test]
    fn bad_templates_are_one_line_errors() {
        let Err(err) = compile("{{.ID") else { panic!("an unclosed action parses") };
        assert!(err.to_string().starts_with("invalid format template \"{{.ID\": "), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
        let err = render(&compile("{{.Nope}}").expect("parses"), &json!({"ID": 1})).expect_err("no field");
        assert!(err.to_string().contains("Nope"), "{err}");
    }
}

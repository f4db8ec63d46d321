//! How a log line is written: the record's fields, JSON (with Fluent Bit's
//! date key), and a file output's formats (plain, template, csv, ltsv).

use super::Line;
use crate::config::logging::{
    DateFormat, DateKey, FileFormat, JsonFormat, RecordField, TemplatePiece,
};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub(super) fn field_text(line: &Line, f: RecordField) -> std::borrow::Cow<'_, str> {
    match f {
        RecordField::Time => crate::ops::time::rfc3339(line.time).into(),
        RecordField::Logger => line.logger.as_str().into(),
        RecordField::Level => line.level_name().into(),
        RecordField::Kind => line.kind().into(),
        RecordField::Message => line.message.as_str().into(),
    }
}

pub(super) const ALL: [RecordField; 5] = [
    RecordField::Time,
    RecordField::Logger,
    RecordField::Level,
    RecordField::Kind,
    RecordField::Message,
];

/// The record as a JSON object, with the date key when asked.
pub(super) fn json_record(line: &Line, date: Option<&DateKey>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for f in ALL {
        m.insert(f.key().into(), field_text(line, f).into_owned().into());
    }
    if let Some(DateKey {
        key: Some(k),
        format,
    }) = date
    {
        let d = line.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let v: serde_json::Value = match format {
            DateFormat::Double => serde_json::json!(d.as_secs_f64()),
            DateFormat::Epoch => serde_json::json!(d.as_secs()),
            DateFormat::Iso8601 => crate::ops::time::rfc3339(line.time).into(),
            DateFormat::JavaSqlTimestamp => crate::ops::time::rfc3339(line.time)
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string()
                .into(),
        };
        m.insert(k.clone(), v);
    }
    serde_json::Value::Object(m)
}

pub(super) fn json_batch(batch: &[Arc<Line>], format: JsonFormat, date: &DateKey) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        JsonFormat::Lines => {
            for l in batch {
                let _ = serde_json::to_writer(&mut out, &json_record(l, Some(date)));
                out.push(b'\n');
            }
        }
        JsonFormat::Array => {
            let all: Vec<serde_json::Value> =
                batch.iter().map(|l| json_record(l, Some(date))).collect();
            let _ = serde_json::to_writer(&mut out, &all);
            out.push(b'\n');
        }
    }
    out
}

fn quote_csv(v: &str, delimiter: &str) -> String {
    if v.contains(delimiter) || v.contains(['"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// One line of a file output, newline included.
pub(super) fn file_line(out: &mut Vec<u8>, line: &Line, format: &FileFormat) {
    match format {
        FileFormat::Plain => {
            let _ = serde_json::to_writer(&mut *out, &json_record(line, None));
        }
        FileFormat::Template(pieces) => {
            for p in pieces {
                match p {
                    TemplatePiece::Text(t) => out.extend_from_slice(t.as_bytes()),
                    TemplatePiece::Field(f) => {
                        out.extend_from_slice(field_text(line, *f).as_bytes())
                    }
                }
            }
        }
        FileFormat::Csv(delimiter) => {
            let values: Vec<String> = ALL
                .iter()
                .map(|f| quote_csv(&field_text(line, *f), delimiter))
                .collect();
            out.extend_from_slice(values.join(delimiter).as_bytes());
        }
        FileFormat::Ltsv { delimiter, label } => {
            let values: Vec<String> = ALL
                .iter()
                .map(|f| {
                    let v = field_text(line, *f).replace(['\t', '\n'], " ");
                    format!("{}{label}{v}", f.key())
                })
                .collect();
            out.extend_from_slice(values.join(delimiter).as_bytes());
        }
    }
    out.push(b'\n');
}

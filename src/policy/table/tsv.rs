//! Reading the embedded TSV files: header check, rows with line numbers,
//! and the names derived from the JS client's function column.

use super::TableError;

/// Data rows as (1-based line number, first four columns); blank lines skipped.
pub(super) fn tsv_rows<'a>(
    file: &'static str,
    header: &'static str,
    text: &'a str,
) -> Result<Vec<(usize, [&'a str; 4])>, TableError> {
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let header_ok = lines
        .next()
        .is_some_and(|first| first == header || first.starts_with(&format!("{header}\t")));
    if !header_ok {
        return Err(TableError::BadHeader {
            file,
            expected: header,
        });
    }
    let mut rows = Vec::new();
    for (index, line) in lines.enumerate() {
        let line_number = index + 2;
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let mut take = || cols.next().unwrap_or("");
        let row = [take(), take(), take(), take()];
        if row.iter().any(|c| c.is_empty()) {
            return Err(TableError::BadRow {
                file,
                line: line_number,
                reason: "expected at least 4 non-empty tab-separated columns".to_string(),
            });
        }
        rows.push((line_number, row));
    }
    Ok(rows)
}

pub(super) fn duplicate(
    file: &'static str,
    line: usize,
    method: &str,
    template: &str,
) -> TableError {
    TableError::DuplicateRoute {
        file,
        line,
        method: method.to_string(),
        template: template.to_string(),
    }
}

/// `StreamChat._sayHi` → `SayHi`; `A.unflagMessage / unflagUser` → `UnflagMessage`.
pub(super) fn operation_from_js_function(js_function: &str) -> String {
    let first = js_function
        .split_once(" / ")
        .map_or(js_function, |(a, _)| a);
    let name = first.rsplit_once('.').map_or(first, |(_, n)| n);
    let mut chars = name.trim().trim_start_matches('_').chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

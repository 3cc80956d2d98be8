//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no network) with the
//! charts of every experiment and the same tables as `report.md`.
//!
//! The tables are produced by converting the Markdown renderer's output (a small, known subset:
//! headings, paragraphs, bullet lists, pipe tables, `code` and **bold**), so the two reports can
//! never disagree.

use std::fmt::Write as _;

use crate::charts::{self, Chart};
use crate::markdown;
use crate::summary::Summary;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}td.r{text-align:right}\
code{background:#f3f3f3;padding:0 .2em}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}\
section{border-top:2px solid #ddd;margin-top:2em}.error{color:#a00}";

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline Markdown: escapes, then `code` and **bold**.
fn inline(s: &str) -> String {
    let escaped = escape(&s.replace("\\|", "|"));
    let mut out = String::new();
    let mut code = false;
    for (i, part) in escaped.split('`').enumerate() {
        if i > 0 {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        }
        if code {
            out.push_str(part);
        } else {
            let mut bold = false;
            for (j, p) in part.split("**").enumerate() {
                if j > 0 {
                    out.push_str(if bold { "</strong>" } else { "<strong>" });
                    bold = !bold;
                }
                out.push_str(p);
            }
            if bold {
                out.push_str("</strong>");
            }
        }
    }
    if code {
        out.push_str("</code>");
    }
    out
}

/// Cells of a pipe-table row (`\|` is a literal pipe).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev = ' ';
    for c in inner.chars() {
        if c == '|' && prev != '\\' {
            out.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(c);
        }
        prev = c;
    }
    out.push(cur.trim().to_owned());
    out
}

/// Converts the Markdown the report renderer writes into HTML.
pub fn markdown_to_html(md: &str) -> String {
    let mut out = String::new();
    let lines: Vec<&str> = md.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(out, "<h2>{}</h2>", inline(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(out, "<h1>{}</h1>", inline(h));
        } else if line.starts_with("- ") {
            out.push_str("<ul>\n");
            while i < lines.len() && lines[i].starts_with("- ") {
                let _ = writeln!(out, "<li>{}</li>", inline(&lines[i][2..]));
                i += 1;
            }
            out.push_str("</ul>\n");
            continue;
        } else if line.starts_with('|') {
            let header = cells(line);
            let right: Vec<bool> = lines
                .get(i + 1)
                .map(|l| cells(l).iter().map(|c| c.ends_with(':')).collect())
                .unwrap_or_default();
            out.push_str("<table>\n<tr>");
            for h in &header {
                let _ = write!(out, "<th>{}</th>", inline(h));
            }
            out.push_str("</tr>\n");
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                out.push_str("<tr>");
                for (k, c) in cells(lines[i]).iter().enumerate() {
                    let class = if right.get(k).copied().unwrap_or(false) {
                        " class=\"r\""
                    } else {
                        ""
                    };
                    let _ = write!(out, "<td{class}>{}</td>", inline(c));
                }
                out.push_str("</tr>\n");
                i += 1;
            }
            out.push_str("</table>\n");
            continue;
        } else if !line.trim().is_empty() {
            let _ = writeln!(out, "<p>{}</p>", inline(line));
        }
        i += 1;
    }
    out
}

fn figure(out: &mut String, chart: &Chart) {
    let _ = writeln!(
        out,
        "<figure class=\"chart\" data-chart=\"{}\">\n{}\n<figcaption>{}</figcaption>\n</figure>",
        escape(&chart.id),
        chart.svg,
        escape(&chart.title)
    );
}

/// Renders `report.html`; returns the page and the number of charts in it.
pub fn render(summary: &Summary) -> (String, usize) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>isolab report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&summary.run_id)
    );
    out.push_str(&markdown_to_html(&markdown::header(summary)));
    let mut n = 0;
    for (name, e) in &summary.experiments {
        let _ = writeln!(out, "<section id=\"experiment-{}\">", escape(name));
        let md = markdown::experiment_section(name, e);
        let (heading, rest) = md.split_once('\n').unwrap_or((&md, ""));
        out.push_str(&markdown_to_html(heading));
        for chart in charts::experiment_charts(e) {
            match chart {
                Ok(c) => {
                    figure(&mut out, &c);
                    n += 1;
                }
                Err(err) => {
                    let _ = writeln!(out, "<p class=\"error\">{}</p>", escape(&err.to_string()));
                }
            }
        }
        out.push_str(&markdown_to_html(rest));
        out.push_str("</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_subset_converts() {
        let md = "# T\n\n- a `b`\n\n| x | y |\n|---|---:|\n| 1 \\| 2 | **3** |\n\nplain <p>\n";
        let html = markdown_to_html(md);
        assert!(html.contains("<h1>T</h1>"));
        assert!(html.contains("<li>a <code>b</code></li>"));
        assert!(
            html.contains("<td>1 | 2</td><td class=\"r\"><strong>3</strong></td>"),
            "{html}"
        );
        assert!(html.contains("<p>plain &lt;p&gt;</p>"));
    }
}

//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no network) with the
//! charts of every experiment and the same tables as `report.md`.
//!
//! The tables are produced by converting the Markdown renderer's output with `pulldown-cmark`
//! (CommonMark and GitHub tables), so the two reports can never disagree.

use std::fmt::Write as _;

use crate::charts::{self, Chart};
use crate::markdown;
use crate::summary::Summary;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}\
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}\
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

/// Converts the Markdown the report renderer writes (CommonMark with GitHub tables) into HTML,
/// with `pulldown-cmark`. Raw HTML in the Markdown (a pipeline or platform name with `<`) is
/// escaped, never passed through.
pub fn markdown_to_html(md: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    let parser = Parser::new_ext(md, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, parser);
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
    let _ = writeln!(out, "<section id=\"environment\">");
    out.push_str(&markdown_to_html(&crate::environment::markdown(
        &summary.environment,
    )));
    out.push_str("</section>\n</body>\n</html>\n");
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_markdown_converts() {
        let md = "# T\n\n- a `b`\n\n| x | y |\n|---|---:|\n| 1 \\| 2 | **3** |\n\nplain <p>\n";
        let html = markdown_to_html(md);
        assert!(html.contains("<h1>T</h1>"), "{html}");
        assert!(html.contains("<li>a <code>b</code></li>"), "{html}");
        assert!(html.contains("<td>1 | 2</td>"), "{html}");
        assert!(
            html.contains("<td style=\"text-align: right\"><strong>3</strong></td>"),
            "{html}"
        );
        assert!(html.contains("<p>plain &lt;p&gt;</p>"), "{html}");
    }
}

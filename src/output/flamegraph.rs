//! Flame graphs of folded stacks, drawn by inferno: the `--flamegraph` file
//! of `netlens cost` and the web UI's interactive graph. When there is
//! nothing to draw, an SVG that says why stands in for the graph, so a file
//! or a page never shows an empty image or an inferno error banner.

use std::path::Path;

use anyhow::Context;

/// The title and subtitle of a graph.
pub struct Titles<'a> {
    pub title: &'a str,
    pub subtitle: Option<String>,
}

/// Draws `folded` (`frame;frame;leaf count` lines) as an interactive SVG;
/// with no line, an SVG carrying `empty_message` instead.
pub fn render<S: AsRef<str>>(folded: &[S], titles: Titles<'_>, empty_message: &str) -> Vec<u8> {
    if folded.is_empty() {
        return message_svg(titles.title, empty_message);
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = titles.title.to_owned();
    options.subtitle = titles.subtitle;
    options.count_name = "samples".to_owned();
    // Same stacks, same colors: two runs compare side by side, and a
    // redrawn graph does not flicker.
    options.hash = true;
    let mut svg = Vec::with_capacity(64 * 1024);
    match inferno::flamegraph::from_lines(&mut options, folded.iter().map(|l| l.as_ref()), &mut svg)
    {
        Ok(()) => svg,
        Err(e) => message_svg(titles.title, &format!("cannot draw the flame graph: {e}")),
    }
}

/// Writes [`render`]'s SVG to `path`.
pub fn write_file<S: AsRef<str>>(
    folded: &[S],
    titles: Titles<'_>,
    empty_message: &str,
    path: &Path,
) -> anyhow::Result<()> {
    std::fs::write(path, render(folded, titles, empty_message))
        .with_context(|| format!("writing the flame graph to {}", path.display()))
}

/// A small SVG with a title and one line of text.
pub fn message_svg(title: &str, message: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"800\" height=\"80\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"10\" y=\"30\" font-family=\"sans-serif\" font-size=\"16\">{}</text>\n\
         <text x=\"10\" y=\"60\" font-family=\"sans-serif\" font-size=\"14\" fill=\"#555\">{}</text>\n\
         </svg>\n",
        xml_text(title),
        xml_text(message)
    )
    .into_bytes()
}

/// `text` with the characters XML gives meaning to escaped.
fn xml_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles() -> Titles<'static> {
        Titles {
            title: "NET_RX",
            subtitle: None,
        }
    }

    #[test]
    fn stacks_are_drawn_and_nothing_gives_a_message() {
        let folded = [
            "net_rx_action;__napi_poll;veth_poll 2",
            "net_rx_action;tcp_v4_rcv;sock_def_readable 7",
        ];
        let svg = String::from_utf8(render(&folded, titles(), "none")).expect("utf-8");
        assert!(svg.starts_with("<?xml") && svg.contains("sock_def_readable"));
        assert!(svg.contains("NET_RX"));

        let none: [&str; 0] = [];
        let svg = String::from_utf8(render(&none, titles(), "no <stack> & none")).expect("utf-8");
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("no &lt;stack&gt; &amp; none"), "{svg}");
    }

    #[test]
    fn a_file_is_written_in_either_case() {
        let dir = std::env::temp_dir().join(format!("netlens-flame-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("none.svg");
        let none: [&str; 0] = [];
        write_file(&none, titles(), "No stack was sampled", &path).expect("written");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.contains("No stack was sampled"));
        let err =
            write_file(&none, titles(), "x", &dir.join("no/such/dir.svg")).expect_err("no dir");
        assert!(format!("{err:#}").contains("no/such/dir.svg"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

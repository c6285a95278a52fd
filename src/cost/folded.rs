//! Folded stacks (`root;caller;leaf count` per line), the input format of
//! flame graph tools and Pyroscope, and flame graph SVGs drawn from them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Label of a stack that has no frames at all.
const NO_FRAMES: &str = "[unknown]";

#[derive(Debug, Clone, Default)]
pub struct FoldedStacks {
    counts: HashMap<String, u64>,
}

impl FoldedStacks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `samples` to a stack given leaf first, as the kernel records it.
    pub fn add<S: AsRef<str>>(&mut self, frames_leaf_first: &[S], samples: u64) {
        *self.counts.entry(fold_line(frames_leaf_first)).or_default() += samples;
    }

    /// Adds `samples` to a stack already folded by [`fold_line`].
    pub fn add_line(&mut self, line: &str, samples: u64) {
        match self.counts.get_mut(line) {
            Some(count) => *count += samples,
            None => {
                self.counts.insert(line.to_owned(), samples);
            }
        }
    }

    /// (stack, count) pairs sorted by stack.
    pub fn into_sorted(self) -> Vec<(String, u64)> {
        let mut stacks: Vec<(String, u64)> = self.counts.into_iter().collect();
        stacks.sort_unstable();
        stacks
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn total_samples(&self) -> u64 {
        self.counts.values().sum()
    }

    /// One `stack count` line per stack, sorted by stack so that equal input
    /// gives equal files.
    pub fn lines(&self) -> Vec<String> {
        let mut stacks: Vec<(&String, &u64)> = self.counts.iter().collect();
        stacks.sort_unstable();
        stacks
            .into_iter()
            .map(|(stack, count)| format!("{stack} {count}"))
            .collect()
    }

    pub fn write_to<W: Write>(&self, mut out: W) -> io::Result<()> {
        for line in self.lines() {
            writeln!(out, "{line}")?;
        }
        out.flush()
    }

    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        self.write_to(BufWriter::new(File::create(path)?))
    }
}

/// The folded form (`root;caller;leaf`, no count) of a stack given leaf
/// first.
pub fn fold_line<S: AsRef<str>>(frames_leaf_first: &[S]) -> String {
    let mut key = String::new();
    for frame in frames_leaf_first.iter().rev() {
        if !key.is_empty() {
            key.push(';');
        }
        push_frame(&mut key, frame.as_ref());
    }
    if key.is_empty() {
        key.push_str(NO_FRAMES);
    }
    key
}

/// Appends a frame name, replacing what would break the line format: `;`
/// separates frames and line breaks separate stacks.
fn push_frame(key: &mut String, frame: &str) {
    if frame.is_empty() {
        key.push_str(NO_FRAMES);
        return;
    }
    key.extend(frame.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' | '\t' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_folded_root_first_and_merged() {
        let mut folded = FoldedStacks::new();
        folded.add(&["tcp_v4_rcv", "ip_local_deliver", "net_rx_action"], 3);
        folded.add(&["veth_poll", "__napi_poll", "net_rx_action"], 1);
        folded.add(&["tcp_v4_rcv", "ip_local_deliver", "net_rx_action"], 2);
        assert_eq!(
            folded.lines(),
            [
                "net_rx_action;__napi_poll;veth_poll 1",
                "net_rx_action;ip_local_deliver;tcp_v4_rcv 5",
            ]
        );
        assert_eq!(folded.len(), 2);
        assert_eq!(folded.total_samples(), 6);
    }

    #[test]
    fn frame_names_cannot_break_the_format() {
        let mut folded = FoldedStacks::new();
        folded.add(&["odd;name\n", "", "bpf_prog_1 [bpf]"], 1);
        folded.add::<&str>(&[], 4);
        assert_eq!(
            folded.lines(),
            ["[unknown] 4", "bpf_prog_1 [bpf];[unknown];odd:name  1"]
        );
    }

    #[test]
    fn folded_file_and_flamegraph_are_written() {
        let dir = std::env::temp_dir().join(format!("netlens-folded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut folded = FoldedStacks::new();
        folded.add(&["sock_def_readable", "tcp_v4_rcv", "net_rx_action"], 7);
        folded.add(&["veth_poll", "__napi_poll", "net_rx_action"], 2);

        let text_path = dir.join("netrx.folded");
        folded.write_file(&text_path).unwrap();
        let text = std::fs::read_to_string(&text_path).unwrap();
        assert_eq!(
            text,
            "net_rx_action;__napi_poll;veth_poll 2\nnet_rx_action;tcp_v4_rcv;sock_def_readable 7\n"
        );

        std::fs::remove_dir_all(&dir).unwrap();
    }
}

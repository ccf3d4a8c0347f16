//! Reading a Server-Sent Events stream (the events stream), line by line: pure, so the
//! CLI's follower is a loop over lines and this is tested apart.

/// One dispatched event: its `event:` name (default `message`), `id:` and `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Collects fields until a blank line dispatches them (the WHATWG event-stream rules,
/// less `retry:`, which a CLI does not need).
#[derive(Debug, Default)]
pub struct SseDecoder {
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl SseDecoder {
    /// Feeds one line (without its line break); a frame when the line ends one.
    pub fn push_line(&mut self, line: &str) -> Option<SseFrame> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseFrame {
                event: event.unwrap_or_else(|| "message".into()),
                id: self.id.clone(),
                data,
            });
        }
        if line.starts_with(':') {
            return None; // a comment: the keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = Some(value.to_string()),
            "id" => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_end_at_blank_lines_and_comments_are_skipped() {
        let mut d = SseDecoder::default();
        let stream =
            ": keep-alive\n\nevent: event\nid: 7\ndata: {\"a\":\ndata: 1}\n\ndata:x\r\n\r\n";
        let frames: Vec<SseFrame> = stream.lines().filter_map(|l| d.push_line(l)).collect();
        assert_eq!(
            frames,
            [
                SseFrame {
                    event: "event".into(),
                    id: Some("7".into()),
                    data: "{\"a\":\n1}".into()
                },
                SseFrame {
                    event: "message".into(),
                    id: Some("7".into()),
                    data: "x".into()
                },
            ]
        );
    }
}

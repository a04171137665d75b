//! OpenAI request bodies as the simulator reads them, and its output text generation.

use crate::config::OutputMode;
use crate::metrics::FinishReason;
use crate::tokenizer::{self, ChatMessage};
use rand::Rng;
use serde::Deserialize;

/// `stream_options` of a request.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Adds a final chunk with `usage` to a stream.
    #[serde(default)]
    pub include_usage: bool,
}

/// A completions prompt: one string, or a list holding one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A single prompt.
    One(String),
    /// A batch; the simulator serves batches of exactly one prompt.
    Many(Vec<String>),
}

/// `POST /v1/completions` body (fields the simulator does not use are ignored).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Base model or LoRA adapter name.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Output token limit.
    pub max_tokens: Option<u64>,
    /// SSE streaming.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// vLLM's extension: generate exactly `max_tokens`.
    #[serde(default)]
    pub ignore_eos: bool,
}

/// One part of a multi-part chat message content.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// Part type; only `text` parts contribute to the prompt.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    pub text: Option<String>,
}

/// A chat message content: a string, a list of parts, or null.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts; the text parts are joined with newlines.
    Parts(Vec<ContentPart>),
}

/// A chat message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`...
    pub role: String,
    /// The content (absent or null counts as empty).
    pub content: Option<Content>,
}

impl Message {
    /// The message's text (borrowed unless it is made of several parts).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match &self.content {
            None => "".into(),
            Some(Content::Text(t)) => t.as_str().into(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n")
                .into(),
        }
    }
}

/// `POST /v1/chat/completions` body (fields the simulator does not use are ignored).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Base model or LoRA adapter name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Output token limit (older name).
    pub max_tokens: Option<u64>,
    /// Output token limit (newer name; wins over `max_tokens`).
    pub max_completion_tokens: Option<u64>,
    /// SSE streaming.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// vLLM's extension: generate exactly `max_tokens`.
    #[serde(default)]
    pub ignore_eos: bool,
}

/// Renders a chat request's messages into its prompt text (see [`tokenizer::render_chat`]) and
/// returns it with the last message's text (what echo mode returns).
pub fn chat_prompt(messages: &[Message]) -> (String, String) {
    let texts: Vec<std::borrow::Cow<'_, str>> = messages.iter().map(Message::text).collect();
    let prompt = tokenizer::render_chat(
        messages
            .iter()
            .zip(&texts)
            .map(|(m, t)| -> ChatMessage<'_> { (m.role.as_str(), t.as_ref()) }),
    );
    let last = texts.last().map(|t| t.to_string()).unwrap_or_default();
    (prompt, last)
}

/// Words of random output; each is one token of the dummy tokenizer.
const WORDS: &[&str] = &[
    "the", "model", "answers", "with", "a", "short", "text", "about", "this", "question", "and",
    "its", "context", "in", "plain", "words", "that", "look", "like", "real", "output", "from",
    "an", "helper", "for", "testing", "only", "so", "each", "token", "is", "one",
];

/// The output of one request: its text, each token's byte range in it, and why it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Full completion text.
    pub text: String,
    /// Byte range of each token (with the whitespace before it).
    pub pieces: Vec<(usize, usize)>,
    /// Finish reason.
    pub finish: FinishReason,
}

impl Output {
    /// Number of output tokens.
    pub fn tokens(&self) -> usize {
        self.pieces.len()
    }

    /// The text of token `i`.
    pub fn piece(&self, i: usize) -> &str {
        let (a, b) = self.pieces[i];
        &self.text[a..b]
    }
}

/// Output length in random mode with `max_tokens` = `max`: llm-d-inference-sim's 6-bucket
/// histogram (20/30/20/5/10/15 %); equal buckets when `max <= 120`, otherwise 20 tokens each
/// except the fourth, which takes the remainder. Uniform inside a bucket.
pub fn histogram_length<R: Rng + ?Sized>(rng: &mut R, max: usize) -> usize {
    const P: [f64; 6] = [0.2, 0.3, 0.2, 0.05, 0.1, 0.15];
    if max <= 1 {
        return max;
    }
    let mut bounds = [0usize; 7];
    if max <= 120 {
        for (i, b) in bounds.iter_mut().enumerate() {
            *b = max * i / 6;
        }
    } else {
        bounds = [0, 20, 40, 60, max - 40, max - 20, max];
    }
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut bucket = 5;
    for (i, p) in P.iter().enumerate() {
        acc += p;
        if u < acc {
            bucket = i;
            break;
        }
    }
    let (lo, hi) = (bounds[bucket] + 1, bounds[bucket + 1]);
    if lo >= hi {
        hi.max(1)
    } else {
        rng.random_range(lo..=hi)
    }
}

/// Produces the output of a request. `max_tokens` is the request's limit, `room` the context
/// left after the prompt (`max_model_len - prompt tokens`, at least 1), `echo_source` the text
/// echo mode returns.
pub fn generate<R: Rng + ?Sized>(
    rng: &mut R,
    mode: OutputMode,
    max_tokens: Option<usize>,
    ignore_eos: bool,
    room: usize,
    echo_source: &str,
) -> Output {
    let limit = max_tokens.unwrap_or(room).min(room);
    match mode {
        OutputMode::Echo => {
            let mut pieces = Vec::new();
            let mut truncated = false;
            for t in tokenizer::tokens(echo_source) {
                if pieces.len() == limit {
                    truncated = true;
                    break;
                }
                let start = t.piece.as_ptr() as usize - echo_source.as_ptr() as usize;
                pieces.push((start, start + t.piece.len()));
            }
            let end = pieces.last().map(|p| p.1).unwrap_or(0);
            let finish = if truncated {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            Output {
                text: echo_source[..end].to_string(),
                pieces,
                finish,
            }
        }
        OutputMode::Random => {
            let n = match max_tokens {
                Some(m) if ignore_eos => m.min(room),
                Some(m) => histogram_length(rng, m).min(room),
                None => normal_length(rng).clamp(1, room),
            };
            let finish = match max_tokens {
                Some(m) if n >= m.min(room) => FinishReason::Length,
                None if n >= room => FinishReason::Length,
                _ => FinishReason::Stop,
            };
            let mut text = String::with_capacity(n * 7);
            let mut pieces = Vec::with_capacity(n);
            for i in 0..n {
                let start = text.len();
                if i > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
                pieces.push((start, text.len()));
            }
            Output {
                text,
                pieces,
                finish,
            }
        }
    }
}

/// Output length without `max_tokens`: N(40, 20) rounded, at least 1 (no ±70 % clamp here).
fn normal_length<R: Rng + ?Sized>(rng: &mut R) -> usize {
    match rand_distr::Normal::new(40.0f64, 20.0) {
        Ok(n) => rand_distr::Distribution::sample(&n, rng).round().max(1.0) as usize,
        Err(_) => 40,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn histogram_lengths_stay_in_range_and_fill_every_bucket() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = [0usize; 6];
        for _ in 0..5000 {
            let n = histogram_length(&mut rng, 1000);
            assert!((1..=1000).contains(&n));
            let b = match n {
                1..=20 => 0,
                21..=40 => 1,
                41..=60 => 2,
                61..=960 => 3,
                961..=980 => 4,
                _ => 5,
            };
            seen[b] += 1;
        }
        // 30 % in the second bucket, 5 % in the wide fourth one.
        assert!(seen[1] > 1300 && seen[1] < 1700, "{seen:?}");
        assert!(seen[3] > 150 && seen[3] < 350, "{seen:?}");
        for _ in 0..500 {
            assert!((1..=12).contains(&histogram_length(&mut rng, 12)));
        }
    }

    #[test]
    fn random_output_has_one_token_per_word_and_echo_truncates() {
        let mut rng = StdRng::seed_from_u64(2);
        let o = generate(&mut rng, OutputMode::Random, Some(50), true, 1000, "");
        assert_eq!(o.tokens(), 50);
        assert_eq!(tokenizer::count(&o.text), 50);
        assert_eq!(o.finish, FinishReason::Length);
        let e = generate(
            &mut rng,
            OutputMode::Echo,
            Some(3),
            false,
            1000,
            "Hi there, you all",
        );
        assert_eq!(e.text, "Hi there,");
        assert_eq!(e.piece(1), " there");
        assert_eq!(e.finish, FinishReason::Length);
        let e = generate(&mut rng, OutputMode::Echo, None, false, 1000, "Hi there");
        assert_eq!((e.tokens(), e.finish), (2, FinishReason::Stop));
        let r = generate(&mut rng, OutputMode::Random, None, false, 5, "");
        assert!((1..=5).contains(&r.tokens()));
    }
}

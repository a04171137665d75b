//! The deterministic dummy tokenizer, chat prompt rendering and prompt block hashing.
//!
//! **Tokens.** Whitespace separates tokens and is not a token itself. A run of letters and digits
//! (Unicode alphanumerics and `_`) is cut into tokens of at most [`MAX_WORD_TOKEN_CHARS`]
//! characters, so most English words are one token. Every other character (punctuation, symbols)
//! is one token. A token's id is the 32-bit FNV-1a hash of its characters. The same text always
//! gives the same tokens, and two texts sharing a prefix share their leading tokens (all but
//! possibly the token cut by the end of the shared part).
//!
//! **Chat rendering.** Messages become one prompt text, each as `<|role|>\n{content}\n` in order,
//! followed by `<|assistant|>\n` (the generation prompt). Appending a message to a conversation
//! only appends text, so the earlier turns stay a prefix (and hit the prefix cache).
//!
//! **Block hashes.** The prompt's tokens are grouped in blocks of `block_size`; only full blocks
//! are hashed. Block `i`'s hash is the 64-bit FNV-1a hash of block `i - 1`'s hash followed by
//! block `i`'s token ids; the first block chains from the hash of the model name. A block's hash
//! therefore names the whole prefix up to its end, as vLLM's prefix-cache hashes do.

/// The longest alphanumeric token, in characters.
pub const MAX_WORD_TOKEN_CHARS: usize = 8;

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV64_PRIME);
    }
    h
}

fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// One token of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// The token's characters.
    pub text: &'a str,
    /// The token with the whitespace before it (what echo mode sends for it).
    pub piece: &'a str,
    /// The token id (FNV-1a 32 of `text`).
    pub id: u32,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The tokens of `text`, in order (see the module documentation for the rules).
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens { text, pos: 0 }
}

/// The number of tokens of `text`.
pub fn count(text: &str) -> usize {
    tokens(text).count()
}

/// Iterator returned by [`tokens`].
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let rest = &self.text[self.pos..];
        let start = rest.find(|c: char| !c.is_whitespace())?;
        let body = &rest[start..];
        let mut chars = body.char_indices();
        let (_, first) = chars.next()?;
        let mut end = first.len_utf8();
        if is_word(first) {
            for (n, (i, c)) in (1..).zip(chars) {
                if !is_word(c) || n == MAX_WORD_TOKEN_CHARS {
                    break;
                }
                end = i + c.len_utf8();
            }
        }
        let token = &body[..end];
        let piece = &rest[..start + end];
        self.pos += start + end;
        Some(Token {
            text: token,
            piece,
            id: fnv32(token.as_bytes()),
        })
    }
}

/// A prompt's token count and the chained hashes of its full blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptBlocks {
    /// Number of prompt tokens.
    pub tokens: usize,
    /// Hashes of the full blocks, in order (`tokens / block_size` of them).
    pub hashes: Vec<u64>,
}

/// Tokenizes `prompt` and hashes its full blocks of `block_size` tokens, chained from `model`.
pub fn prompt_blocks(model: &str, prompt: &str, block_size: usize) -> PromptBlocks {
    let block_size = block_size.max(1);
    let mut out = PromptBlocks::default();
    let mut prev = fnv64_extend(FNV64_OFFSET, model.as_bytes());
    let mut cur = fnv64_extend(FNV64_OFFSET, &prev.to_le_bytes());
    let mut in_block = 0;
    for t in tokens(prompt) {
        out.tokens += 1;
        cur = fnv64_extend(cur, &t.id.to_le_bytes());
        in_block += 1;
        if in_block == block_size {
            prev = cur;
            out.hashes.push(prev);
            cur = fnv64_extend(FNV64_OFFSET, &prev.to_le_bytes());
            in_block = 0;
        }
    }
    out
}

/// One chat message for [`render_chat`]: its role and its text content.
pub type ChatMessage<'a> = (&'a str, &'a str);

/// Renders chat messages into one prompt text (see the module documentation).
pub fn render_chat<'a>(messages: impl IntoIterator<Item = ChatMessage<'a>>) -> String {
    let mut out = String::new();
    for (role, content) in messages {
        out.push_str("<|");
        out.push_str(role);
        out.push_str("|>\n");
        out.push_str(content);
        out.push('\n');
    }
    out.push_str("<|assistant|>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_punctuation_and_long_words() {
        let t: Vec<&str> = tokens("Hello, world!  supercalifragilistic")
            .map(|t| t.text)
            .collect();
        assert_eq!(
            t,
            ["Hello", ",", "world", "!", "supercal", "ifragili", "stic"]
        );
        let pieces: String = tokens("a  b,c").map(|t| t.piece).collect();
        assert_eq!(pieces, "a  b,c");
        assert_eq!(count(""), 0);
        assert_eq!(count("   "), 0);
        assert_eq!(count("héllo wörld"), 2);
    }

    #[test]
    fn shared_prefix_shares_tokens_and_blocks() {
        let a = "the quick brown fox jumps over the lazy dog again and again";
        let b = "the quick brown fox jumps over the lazy cat";
        let ta: Vec<u32> = tokens(a).map(|t| t.id).collect();
        let tb: Vec<u32> = tokens(b).map(|t| t.id).collect();
        assert_eq!(ta[..8], tb[..8]);
        assert_ne!(ta[8], tb[8]);
        let ba = prompt_blocks("m", a, 4);
        let bb = prompt_blocks("m", b, 4);
        assert_eq!(ba.tokens, 12);
        assert_eq!(ba.hashes.len(), 3);
        assert_eq!(bb.hashes.len(), 2);
        assert_eq!(ba.hashes[..2], bb.hashes[..2]);
        // Chained: the same block content after a different prefix hashes differently.
        let c = prompt_blocks("m", "x y z w the lazy dog again", 4);
        let d = prompt_blocks("m", "x y z v the lazy dog again", 4);
        assert_ne!(c.hashes[1], d.hashes[1]);
        // The model is part of the chain.
        assert_ne!(prompt_blocks("other", a, 4).hashes[0], ba.hashes[0]);
    }

    #[test]
    fn chat_rendering_is_prefix_stable() {
        let one = render_chat([("system", "be brief"), ("user", "hi")]);
        let two = render_chat([
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "hello"),
        ]);
        assert_eq!(one, "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n");
        let shared = one.strip_suffix("<|assistant|>\n").unwrap();
        assert!(two.starts_with(shared));
    }
}

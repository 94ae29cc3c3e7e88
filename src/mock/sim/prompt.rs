//! What the simulated engine sees of a request: the prompt text under the simulator's chat
//! template, its token count (4 bytes a token) and the chained keys of its full blocks.
//!
//! Runs in the HTTP handler, before the request reaches the engine, so hashing a long prompt
//! costs the connection's task and not the engine's step loop. Must not allocate more than the
//! prompt text and its key list.

use serde::de::IgnoredAny;
use serde::Deserialize;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::BYTES_PER_TOKEN;
use crate::mock::responses::Endpoint;

/// A request's prompt as the engine schedules it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Prompt {
    /// Tokens: the text's bytes / 4, rounded up, at least 1.
    pub(crate) tokens: u32,
    /// Key of each full block of the prompt, in order; each key chains the one before.
    pub(crate) block_hashes: Vec<u64>,
}

impl Prompt {
    /// The prompt of a chat or completion request body (already validated as a JSON object).
    pub(crate) fn from_body(endpoint: Endpoint, body: &[u8], block_size: u32) -> Prompt {
        let text = prompt_text(endpoint, body);
        Prompt::from_text(text.as_bytes(), block_size)
    }

    /// The prompt made of `text`.
    pub(crate) fn from_text(text: &[u8], block_size: u32) -> Prompt {
        let tokens = u32::try_from(text.len().div_ceil(BYTES_PER_TOKEN)).unwrap_or(u32::MAX);
        Prompt {
            tokens: tokens.max(1),
            block_hashes: block_hashes(text, block_size),
        }
    }
}

/// Keys of the full blocks of `text`: block `i` holds tokens `[i x block_size, (i + 1) x
/// block_size)`, i.e. bytes `[4 x i x block_size, ...)`; its key is the xxh3 of those bytes
/// seeded with the previous block's key (0 for the first). A trailing partial block has none.
pub(crate) fn block_hashes(text: &[u8], block_size: u32) -> Vec<u64> {
    let block_tokens = usize::try_from(block_size.max(1)).unwrap_or(usize::MAX);
    let full_blocks = text.len().div_ceil(BYTES_PER_TOKEN) / block_tokens;
    let block_bytes = block_tokens.saturating_mul(BYTES_PER_TOKEN);
    let mut hashes = Vec::with_capacity(full_blocks);
    let mut previous = 0;
    for chunk in text.chunks(block_bytes).take(full_blocks) {
        previous = xxh3_64_with_seed(chunk, previous);
        hashes.push(previous);
    }
    hashes
}

/// The fields that carry the prompt; everything else was validated by the handler.
#[derive(Deserialize)]
struct PromptFields {
    #[serde(default)]
    prompt: Option<CompletionPrompt>,
    #[serde(default)]
    messages: Option<Vec<Message>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CompletionPrompt {
    Text(String),
    Texts(Vec<String>),
    /// Token ids, or anything else: no text.
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

/// The simulator's prompt text: a completion's `prompt` (the first string of a list), or for
/// chat `"<|role|>\ncontent\n"` per message. A body it cannot read gives an empty text.
pub(crate) fn prompt_text(endpoint: Endpoint, body: &[u8]) -> String {
    let Ok(fields) = serde_json::from_slice::<PromptFields>(body) else {
        return String::new();
    };
    match endpoint {
        Endpoint::Completion => match fields.prompt {
            Some(CompletionPrompt::Text(text)) => text,
            Some(CompletionPrompt::Texts(texts)) => texts.into_iter().next().unwrap_or_default(),
            Some(CompletionPrompt::Other(_)) | None => String::new(),
        },
        Endpoint::Chat => chat_text(fields.messages.unwrap_or_default()),
    }
}

/// Every string prompt of a completion request body (vLLM renders each of a list); none for a
/// body it cannot read or a prompt of token ids.
pub(crate) fn completion_texts(body: &[u8]) -> Vec<String> {
    match serde_json::from_slice::<PromptFields>(body).map(|f| f.prompt) {
        Ok(Some(CompletionPrompt::Text(text))) => vec![text],
        Ok(Some(CompletionPrompt::Texts(texts))) => texts,
        _ => Vec::new(),
    }
}

/// The simulator's token ids of `text`: one per 4 bytes (the last zero-padded), the bytes read
/// as a little-endian `u32`. Texts sharing a prefix share the ids of its whole tokens, as a
/// real tokenizer's do, which is all a router matching prefixes of ids needs.
pub(crate) fn token_ids(text: &[u8]) -> Vec<u32> {
    text.chunks(BYTES_PER_TOKEN)
        .map(|chunk| {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            u32::from_le_bytes(word)
        })
        .collect()
}

fn chat_text(messages: Vec<Message>) -> String {
    let mut text = String::new();
    for message in messages {
        text.push_str("<|");
        text.push_str(&message.role);
        text.push_str("|>\n");
        match message.content {
            Some(Content::Text(content)) => text.push_str(&content),
            Some(Content::Parts(parts)) => {
                for part in parts.iter().filter_map(|p| p.text.as_deref()) {
                    text.push_str(part);
                }
            }
            Some(Content::Other(_)) | None => {}
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_wraps_each_message_and_joins_text_parts() {
        let body = br#"{"messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"image_url"},
                                      {"type":"text","text":"there"}]},
            {"role":"assistant","content":null}]}"#;
        assert_eq!(
            prompt_text(Endpoint::Chat, body),
            "<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\n\n"
        );
    }

    #[test]
    fn completion_prompt_is_the_string_or_first_of_a_list() {
        let text = |body: &[u8]| prompt_text(Endpoint::Completion, body);
        assert_eq!(text(br#"{"prompt":"abc"}"#), "abc");
        assert_eq!(text(br#"{"prompt":["first","second"]}"#), "first");
        assert_eq!(text(br#"{"prompt":[1,2,3]}"#), "");
    }

    #[test]
    fn tokens_are_four_bytes_rounded_up_and_at_least_one() {
        assert_eq!(Prompt::from_text(b"", 16).tokens, 1);
        assert_eq!(Prompt::from_text(b"abcd", 16).tokens, 1);
        assert_eq!(Prompt::from_text(b"abcde", 16).tokens, 2);
    }

    #[test]
    fn only_full_blocks_are_keyed() {
        // 64 bytes = 16 tokens = one full block; 63 bytes still round up to 16 tokens.
        assert_eq!(block_hashes(&[b'a'; 63], 16).len(), 1);
        assert_eq!(block_hashes(&[b'a'; 60], 16).len(), 0);
        assert_eq!(block_hashes(&[b'a'; 64 * 3 + 10], 16).len(), 3);
    }

    #[test]
    fn keys_chain_so_equal_blocks_after_different_prefixes_differ() {
        let a = [vec![b'x'; 64], vec![b'y'; 64]].concat();
        let b = [vec![b'z'; 64], vec![b'y'; 64]].concat();
        let (ha, hb) = (block_hashes(&a, 16), block_hashes(&b, 16));
        assert_ne!(ha[1], hb[1], "same second block, different prefix");
        let a_longer = [a.clone(), vec![b'w'; 70]].concat();
        assert_eq!(
            block_hashes(&a_longer, 16)[..2],
            ha[..],
            "a prefix keeps its keys"
        );
    }
}

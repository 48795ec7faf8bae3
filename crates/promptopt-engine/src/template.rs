//! Turning chat messages into the prompt text the model reads.
//!
//! A model with a `tokenizer.chat_template` in its GGUF metadata is prompted through that Jinja
//! template, rendered with `minijinja` as Hugging Face renders it (`trim_blocks`, `lstrip_blocks`,
//! Python string methods such as `.strip()`, `raise_exception`), with the variables `messages`, `add_generation_prompt` (always true), `bos_token` and `eos_token`.
//!
//! A model without one (a base model such as Gemma 3 270M) gets plain text, the messages in order:
//! a system message followed by a blank line, a user message followed by a newline, an assistant
//! message followed by a blank line. Few-shot demos given as user/assistant turns thus read
//!
//! ```text
//! Classify the sentiment.
//!
//! a gorgeous film
//! positive
//!
//! a dull mess
//! negative
//!
//! the best of the year
//! ```
//!
//! and the model continues after the last line. A final assistant message is left open (no
//! separator after it), so the model continues it. Use stop strings (e.g. `"\n"`) to end the reply.

use minijinja::{Environment, Error, ErrorKind};
use promptopt_lm::{Message, Role};
use serde::Serialize;

use crate::EngineError;

/// A prompt ready for tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    /// The prompt text (special tokens written as text, e.g. `<|im_start|>`).
    pub text: String,
    /// Whether the tokenizer must add the beginning-of-sequence token.
    pub add_bos: bool,
    /// Strings that end the reply because the rendering itself uses them to end a turn (the
    /// blank line after an assistant turn in plain text); added to the request's own stops.
    pub turn_stops: Vec<String>,
}

/// How a model's prompts are written.
#[derive(Debug)]
pub struct PromptRenderer {
    model: String,
    env: Option<Environment<'static>>,
    bos_token: String,
    eos_token: String,
    add_bos: bool,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

impl PromptRenderer {
    /// A renderer for a model with a Jinja chat template.
    ///
    /// `bos_token`/`eos_token` are the texts of the model's special tokens; `add_bos` says whether
    /// the model wants a BOS token (it is not added twice when the template writes it).
    ///
    /// ```
    /// use promptopt_engine::PromptRenderer;
    /// use promptopt_lm::Message;
    ///
    /// let template = "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}\n{% endfor %}\
    ///                 {% if add_generation_prompt %}<assistant>{% endif %}";
    /// let renderer = PromptRenderer::chat("demo", template, "", "", false)?;
    /// let prompt = renderer.render(&[Message::user(" hi ")])?;
    /// assert_eq!(prompt.text, "<user>hi\n<assistant>");
    /// # Ok::<(), promptopt_engine::EngineError>(())
    /// ```
    pub fn chat(
        model: &str,
        template: &str,
        bos_token: &str,
        eos_token: &str,
        add_bos: bool,
    ) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        // As Hugging Face renders chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", template.to_string())
            .map_err(|error| EngineError::Template {
                model: model.to_string(),
                message: error.to_string(),
            })?;
        Ok(Self {
            model: model.to_string(),
            env: Some(env),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            add_bos,
        })
    }

    /// A renderer that writes messages as plain text (for base models without a template).
    pub fn plain(model: &str, add_bos: bool) -> Self {
        Self {
            model: model.to_string(),
            env: None,
            bos_token: String::new(),
            eos_token: String::new(),
            add_bos,
        }
    }

    /// Whether prompts go through a chat template.
    pub fn is_chat(&self) -> bool {
        self.env.is_some()
    }

    /// Renders the messages into the prompt text.
    pub fn render(&self, messages: &[Message]) -> Result<RenderedPrompt, EngineError> {
        let Some(env) = &self.env else {
            // A lone user message is a completion prompt: it is the text, verbatim. A
            // conversation is written as plain turns, and the reply ends where an assistant turn
            // would (a blank line).
            let (text, turn_stops) = match messages {
                [only] if only.role == Role::User => (only.content.clone(), Vec::new()),
                _ => (render_plain(messages), vec![PLAIN_TURN_END.to_string()]),
            };
            return Ok(RenderedPrompt {
                text,
                add_bos: self.add_bos,
                turn_stops,
            });
        };
        let messages: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: role_name(m.role),
                content: &m.content,
            })
            .collect();
        let template = env
            .get_template("chat")
            .map_err(|error| self.template_error(&error))?;
        let text = template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|error| self.template_error(&error))?;
        let add_bos =
            self.add_bos && (self.bos_token.is_empty() || !text.starts_with(&self.bos_token));
        Ok(RenderedPrompt {
            text,
            add_bos,
            turn_stops: Vec::new(),
        })
    }

    fn template_error(&self, error: &Error) -> EngineError {
        EngineError::Template {
            model: self.model.clone(),
            message: error.to_string(),
        }
    }
}

/// What ends an assistant turn in plain text.
const PLAIN_TURN_END: &str = "\n\n";

fn render_plain(messages: &[Message]) -> String {
    let mut text = String::new();
    let last = messages.len().saturating_sub(1);
    for (i, message) in messages.iter().enumerate() {
        text.push_str(&message.content);
        let separator = match message.role {
            Role::System => "\n\n",
            Role::User => "\n",
            Role::Assistant if i == last => "",
            Role::Assistant => PLAIN_TURN_END,
        };
        text.push_str(separator);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_keeps_its_default_system_prompt() {
        let renderer =
            PromptRenderer::chat("smollm2", SMOLLM2, "<|im_start|>", "<|im_end|>", false).unwrap();
        let prompt = renderer.render(&[Message::user("Hi")]).unwrap();
        assert_eq!(
            prompt.text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert!(!prompt.add_bos);
    }

    #[test]
    fn demos_are_rendered_as_turns() {
        let renderer = PromptRenderer::chat("smollm2", SMOLLM2, "", "", false).unwrap();
        let prompt = renderer
            .render(&[
                Message::system("Label it."),
                Message::user("great"),
                Message::assistant("positive"),
                Message::user("awful"),
            ])
            .unwrap();
        assert_eq!(
            prompt.text,
            "<|im_start|>system\nLabel it.<|im_end|>\n<|im_start|>user\ngreat<|im_end|>\n\
             <|im_start|>assistant\npositive<|im_end|>\n<|im_start|>user\nawful<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception_work() {
        let template = "{% if messages[0].role != 'user' %}{{ raise_exception('Only user turns') }}{% endif %}\
                        {{ messages[0].content.strip().upper() }}";
        let renderer = PromptRenderer::chat("t", template, "", "", false).unwrap();
        assert_eq!(
            renderer.render(&[Message::user("  ok ")]).unwrap().text,
            "OK"
        );
        let error = renderer.render(&[Message::system("x")]).unwrap_err();
        assert!(error.to_string().contains("Only user turns"), "{error}");
    }

    #[test]
    fn a_template_that_writes_bos_suppresses_the_tokenizer_bos() {
        let template = "{{ bos_token }}{{ messages[0].content }}";
        let renderer = PromptRenderer::chat("t", template, "<s>", "</s>", true).unwrap();
        let prompt = renderer.render(&[Message::user("x")]).unwrap();
        assert_eq!(prompt.text, "<s>x");
        assert!(!prompt.add_bos);
    }

    #[test]
    fn a_broken_template_is_a_clear_error() {
        let error = PromptRenderer::chat("m", "{% for %}", "", "", false).unwrap_err();
        assert!(
            error.to_string().starts_with("Chat template of `m` failed"),
            "{error}"
        );
    }

    #[test]
    fn plain_completion_separates_turns() {
        let renderer = PromptRenderer::plain("gemma", true);
        let prompt = renderer
            .render(&[
                Message::system("Classify the sentiment."),
                Message::user("a gorgeous film"),
                Message::assistant("positive"),
                Message::user("the best of the year"),
            ])
            .unwrap();
        assert_eq!(
            prompt.text,
            "Classify the sentiment.\n\na gorgeous film\npositive\n\nthe best of the year\n"
        );
        assert!(prompt.add_bos);
        assert_eq!(prompt.turn_stops, ["\n\n"]);
        let completion = renderer
            .render(&[Message::user("Review: dull\nLabel:")])
            .unwrap();
        assert_eq!(completion.text, "Review: dull\nLabel:");
        assert!(completion.turn_stops.is_empty());
        let open = renderer
            .render(&[Message::user("Q"), Message::assistant("The answer is")])
            .unwrap();
        assert_eq!(open.text, "Q\nThe answer is");
    }
}

//! The `react` module: an agent stage. Each step asks the model, through the stage's adapter, for
//! a thought, the next tool and its arguments (a signature of the stage's inputs plus the
//! `trajectory` so far → `next_thought`, `next_tool_name`, `next_tool_args`); the tool's answer
//! (or its error: an unknown tool, arguments that break its schema, a failure, a timeout, the
//! spent budget) is the observation added to the trajectory. After `finish` or `max_iters`
//! steps, the outputs are extracted from the trajectory with reasoning (the stage's inputs plus
//! `trajectory` → its outputs). Every model call is a step of the trace: the steps as
//! `STAGE.react`, the extraction as the stage itself, so that a successful run's extraction,
//! trajectory included, is the stage's demo.

use promptopt_lm::ToolDefinition;
use serde_json::Value;

use super::{Stage, StageCall};
use crate::tools::{describe_arguments, SharedTool, ToolError, Toolbox};
use crate::{CoreError, Example, Field, PredictorState, Signature, Strategy, Trace};

/// Tool calls at most when the stage does not say.
pub const DEFAULT_MAX_ITERS: usize = 5;
/// The input field holding the steps so far.
pub const TRAJECTORY_FIELD: &str = "trajectory";
/// The pseudo-tool that ends the loop.
pub const FINISH: &str = "finish";

const NEXT_THOUGHT: &str = "next_thought";
const NEXT_TOOL_NAME: &str = "next_tool_name";
const NEXT_TOOL_ARGS: &str = "next_tool_args";

/// One step of an agent's trajectory.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    thought: String,
    tool: String,
    arguments: String,
    observation: String,
}

fn render_trajectory(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "(no steps yet)".into();
    }
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        let n = i + 1;
        out.push_str(&format!(
            "Thought {n}: {}\nTool {n}: {}\nArguments {n}: {}\nObservation {n}: {}\n\n",
            s.thought, s.tool, s.arguments, s.observation
        ));
    }
    out.trim_end().to_string()
}

/// The tools the stage may call: those its state names (what `tool_selection` chooses), else
/// those the stage names, found in the run's toolbox.
fn stage_tools(call: &StageCall<'_>, toolbox: Option<&Toolbox>) -> Vec<SharedTool> {
    let names = if call.predictor.tools.is_empty() {
        &call.stage.tools
    } else {
        &call.predictor.tools
    };
    let Some(toolbox) = toolbox else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| toolbox.get(n).cloned())
        .collect()
}

/// The step's instructions: the stage's own, how the loop works, and the tools.
fn step_instructions(stage: &Stage, predictor: &PredictorState, tools: &[SharedTool]) -> String {
    let inputs: Vec<String> = stage
        .signature
        .inputs
        .iter()
        .map(|f| format!("`{}`", f.name))
        .collect();
    let outputs: Vec<String> = stage
        .signature
        .outputs
        .iter()
        .map(|f| format!("`{}`", f.name))
        .collect();
    let mut text = format!(
        "{}\n\nYou are an agent. You are given {} and work toward {} step by step. At each step, write your next thought, choose the next tool and give its arguments as a JSON object. The tool's answer appears as an observation in `{TRAJECTORY_FIELD}`. When you have what you need, choose `{FINISH}` with the arguments {{}}.\n\nThe tools:\n",
        predictor.instructions.trim(),
        inputs.join(", "),
        outputs.join(", "),
    );
    for (i, tool) in tools.iter().enumerate() {
        let description = described(predictor, tool);
        text.push_str(&format!(
            "{}. `{}`: {} Arguments: {}\n",
            i + 1,
            tool.name(),
            description.trim(),
            describe_arguments(tool.parameters()).unwrap_or_else(|| tool.parameters().to_string())
        ));
    }
    text.push_str(&format!(
        "{}. `{FINISH}`: Ends the steps; the outputs are written next. Arguments: {{}}",
        tools.len() + 1
    ));
    text
}

/// The description `predictor` shows for `tool`: its optimized one, else the tool's own.
fn described<'a>(predictor: &'a PredictorState, tool: &'a SharedTool) -> &'a str {
    predictor
        .tool_descriptions
        .get(tool.name())
        .map_or(tool.description(), String::as_str)
}

/// Whether `model`'s provider calls functions natively (OpenAI, Anthropic, Gemini): then each
/// step offers the tools as functions instead of asking for them as fields of the reply.
pub fn native_tools(model: &str) -> bool {
    matches!(
        model.split_once('/').map(|(provider, _)| provider),
        Some("openai" | "anthropic" | "gemini")
    )
}

/// The stage's inputs plus the trajectory.
fn with_trajectory(signature: &Signature) -> Vec<Field> {
    let mut inputs = signature.inputs.clone();
    inputs.push(Field::text(TRAJECTORY_FIELD));
    inputs
}

/// Arguments as the model wrote them: a JSON object, or text holding one.
fn arguments_of(value: Option<&Value>) -> Result<Value, String> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(serde_json::Map::new())),
        Some(Value::String(text)) if text.trim().is_empty() => {
            Ok(Value::Object(serde_json::Map::new()))
        }
        Some(Value::String(text)) => serde_json::from_str(text.trim())
            .map_err(|e| format!("The arguments are not a JSON object ({e}): {text}")),
        Some(other) => Ok(other.clone()),
    }
}

impl StageCall<'_> {
    /// One agent step through native function calling: the reply's text is the thought, its
    /// first function call the tool and arguments (no call: `finish`). Recorded in the trace
    /// with the same outputs as a step written as fields.
    async fn native_step(
        &self,
        step_stage: &Stage,
        step_predictor: &PredictorState,
        fields: &Example,
        tools: &[SharedTool],
        trace: &mut Trace,
    ) -> Result<Example, CoreError> {
        // The thought is the one field written as text; the tool is a function call.
        let thought_stage = Stage {
            signature: Signature::new(
                step_stage.signature.inputs.clone(),
                vec![Field::text(NEXT_THOUGHT)],
            ),
            ..step_stage.clone()
        };
        let call = StageCall::new(&thought_stage, step_predictor, fields, self.runtime)?;
        let adapter = call.first_adapter();
        let mut definitions: Vec<ToolDefinition> = tools
            .iter()
            .map(|t| ToolDefinition {
                name: t.name().to_string(),
                description: described(self.predictor, t).to_string(),
                parameters: t.parameters().clone(),
            })
            .collect();
        definitions.push(ToolDefinition {
            name: FINISH.into(),
            description: "Ends the steps; the outputs are written next.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        });
        let mut request = call.request(adapter.as_ref()).with_tools(definitions);
        request.response_format = None;
        let started = std::time::Instant::now();
        let response = call
            .lm
            .chat(&request)
            .await
            .map_err(|source| CoreError::Lm {
                predictor: step_stage.name.clone(),
                source,
            })?;
        let latency = started.elapsed();
        let raw = response.text().to_string();
        let thought = adapter
            .parse(&thought_stage.signature, Strategy::Predict, &raw)
            .ok()
            .and_then(|o| o.get(NEXT_THOUGHT).map(crate::value_to_text))
            .unwrap_or_else(|| raw.trim().to_string());
        let called = response
            .choices
            .first()
            .and_then(|c| c.tool_calls.first())
            .cloned();
        let (tool, arguments) = match called {
            Some(c) => (c.name, c.arguments),
            None => (FINISH.to_string(), serde_json::json!({})),
        };
        let mut outputs = Example::new();
        outputs.insert(NEXT_THOUGHT, Value::String(thought));
        outputs.insert(NEXT_TOOL_NAME, Value::String(tool.clone()));
        outputs.insert(NEXT_TOOL_ARGS, arguments.clone());
        trace.steps.push(crate::TraceStep {
            predictor: step_stage.name.clone(),
            inputs: call.inputs.clone(),
            request,
            raw: format!("{raw}\n[call] {tool} {arguments}")
                .trim()
                .to_string(),
            outputs: Some(outputs.clone()),
            parse_error: None,
            usage: response.usage,
            latency,
            cost_usd: response.cost_usd,
            cache_hit: response.cache_hit,
        });
        Ok(outputs)
    }

    /// Runs a `react` stage (see the module documentation).
    pub(super) async fn run_react(&self, trace: &mut Trace) -> Result<Example, CoreError> {
        let toolbox = self.runtime.toolbox().await?;
        let toolbox = toolbox.as_deref();
        let tools = stage_tools(self, toolbox);
        let mut names: Vec<String> = tools.iter().map(|t| t.name().to_string()).collect();
        names.push(FINISH.to_string());
        let step_stage = Stage {
            name: format!("{}.react", self.stage.name),
            module: Strategy::Predict,
            signature: Signature::new(
                with_trajectory(&self.stage.signature),
                vec![
                    Field::text(NEXT_THOUGHT),
                    Field::label(NEXT_TOOL_NAME, names.clone()),
                    Field::new(NEXT_TOOL_ARGS, crate::FieldType::Json),
                ],
            ),
            adapter: self.stage.adapter,
            model: self.stage.model.clone(),
            tools: Vec::new(),
            max_iters: None,
        };
        let step_predictor = PredictorState {
            instructions: step_instructions(self.stage, self.predictor, &tools),
            demos: Vec::new(),
            strategy: Strategy::Predict,
            model: self.predictor.model.clone(),
            tools: Vec::new(),
            tool_descriptions: Default::default(),
        };
        let max_iters = self.stage.max_iters.unwrap_or(DEFAULT_MAX_ITERS);
        let mut steps: Vec<Step> = Vec::new();
        for _ in 0..max_iters {
            let mut fields = self.inputs.clone();
            fields.insert(TRAJECTORY_FIELD, Value::String(render_trajectory(&steps)));
            let call = StageCall::new(&step_stage, &step_predictor, &fields, self.runtime)?;
            let step = if native_tools(call.model) {
                self.native_step(&step_stage, &step_predictor, &fields, &tools, trace)
                    .await
            } else {
                call.run_plain(trace).await
            };
            let outputs = match step {
                Ok(outputs) => outputs,
                Err(CoreError::Parse { message, raw, .. }) => {
                    steps.push(Step {
                        thought: raw.trim().to_string(),
                        tool: "(none)".into(),
                        arguments: "{}".into(),
                        observation: format!(
                            "Your reply could not be read ({message}): give `{NEXT_THOUGHT}`, `{NEXT_TOOL_NAME}` (one of {}) and `{NEXT_TOOL_ARGS}` (a JSON object).",
                            names.join(", ")
                        ),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let thought = outputs
                .get(NEXT_THOUGHT)
                .map(crate::value_to_text)
                .unwrap_or_default();
            let tool = outputs
                .get(NEXT_TOOL_NAME)
                .map(crate::value_to_text)
                .unwrap_or_default();
            if tool == FINISH {
                break;
            }
            let (arguments, observation) = match arguments_of(outputs.get(NEXT_TOOL_ARGS)) {
                Ok(arguments) => {
                    let observation = match toolbox {
                        Some(toolbox) if names.contains(&tool) => {
                            toolbox.call(&tool, &arguments).await
                        }
                        _ => Err(ToolError::Unknown {
                            name: tool.clone(),
                            available: names[..names.len() - 1].join(", "),
                        }),
                    };
                    (
                        arguments.to_string(),
                        observation.unwrap_or_else(|e| e.to_string()),
                    )
                }
                Err(message) => (
                    outputs
                        .get(NEXT_TOOL_ARGS)
                        .map(crate::value_to_text)
                        .unwrap_or_default(),
                    message,
                ),
            };
            steps.push(Step {
                thought,
                tool,
                arguments,
                observation,
            });
        }
        // The outputs, from the trajectory, with reasoning: under the stage's own name.
        let extract_stage = Stage {
            name: self.stage.name.clone(),
            module: Strategy::ChainOfThought,
            signature: Signature::new(
                with_trajectory(&self.stage.signature),
                self.stage.signature.outputs.clone(),
            ),
            adapter: self.stage.adapter,
            model: self.stage.model.clone(),
            tools: Vec::new(),
            max_iters: None,
        };
        let mut extract_predictor = self.predictor.clone();
        extract_predictor.strategy = Strategy::ChainOfThought;
        extract_predictor.tools = Vec::new();
        let mut fields = self.inputs.clone();
        fields.insert(TRAJECTORY_FIELD, Value::String(render_trajectory(&steps)));
        let call = StageCall::new(&extract_stage, &extract_predictor, &fields, self.runtime)?;
        call.run_plain(trace).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use promptopt_lm::{ChatRequest, ScriptedLm};

    use super::*;
    use crate::program::{LmRegistry, Program, Runtime};
    use crate::tools::calculator::Calculator;
    use crate::tools::Toolbox;

    /// One agent step as the chat adapter writes it.
    fn step(thought: &str, tool: &str, args: &str) -> String {
        format!("[[ ## next_thought ## ]]\n{thought}\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n[[ ## next_tool_args ## ]]\n{args}\n\n[[ ## completed ## ]]")
    }

    fn answer(reasoning: &str, value: &str) -> String {
        format!("[[ ## reasoning ## ]]\n{reasoning}\n\n[[ ## answer ## ]]\n{value}\n\n[[ ## completed ## ]]")
    }

    /// A model that replies with `script` in order, and records every request.
    fn scripted(script: Vec<String>) -> (ScriptedLm, Arc<Mutex<Vec<ChatRequest>>>) {
        let replies = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let lm = ScriptedLm::new(move |request| {
            log.lock().unwrap().push(request.clone());
            Ok(replies.lock().unwrap().pop_front().unwrap_or_default())
        });
        (lm, seen)
    }

    fn agent(max_iters: Option<usize>) -> Program {
        let mut stage = Stage::new(
            "agent",
            Signature::new(vec![Field::text("question")], vec![Field::text("answer")])
                .with_instructions("Answer the arithmetic question."),
        )
        .with_module(Strategy::React)
        .with_tools(vec!["calculator".into()]);
        stage.max_iters = max_iters;
        Program::new(vec!["question".into()], vec![stage], vec!["answer".into()]).unwrap()
    }

    async fn run(program: &Program, script: Vec<String>) -> (Example, Trace, Vec<ChatRequest>) {
        let (lm, seen) = scripted(script);
        let toolbox = Toolbox::new(vec![Arc::new(Calculator::default())])
            .with_timeout(Duration::from_secs(5));
        let mut runtime = Runtime::new(LmRegistry::new("scripted/task", Arc::new(lm)))
            .with_tools(Arc::new(toolbox));
        // One reply per step: no second try through the JSON adapter.
        runtime.settings.json_fallback = false;
        let state = program.initial_state();
        let input = Example::new().with("question", "What is 12 times 4?");
        let output = program.run_traced(&state, &input, &runtime).await;
        let requests = seen.lock().unwrap().clone();
        (output.result.unwrap().outputs, output.trace, requests)
    }

    fn last_user(request: &ChatRequest) -> &str {
        request.messages.last().map_or("", |m| m.content.as_str())
    }

    #[tokio::test]
    async fn the_right_tool_is_called_and_its_answer_reaches_the_outputs() {
        let (outputs, trace, requests) = run(
            &agent(None),
            vec![
                step("I multiply.", "calculator", "{\"expression\": \"12 * 4\"}"),
                step("I have it.", "finish", "{}"),
                answer("The calculator says 48.", "48"),
            ],
        )
        .await;
        assert_eq!(outputs.text("answer").as_deref(), Some("48"));
        assert_eq!(
            outputs.text("reasoning").as_deref(),
            Some("The calculator says 48.")
        );
        let names: Vec<&str> = trace.steps.iter().map(|s| s.predictor.as_str()).collect();
        assert_eq!(names, ["agent.react", "agent.react", "agent"]);
        // The tools are described to the model, the observation fed back.
        let system = &requests[0].messages[0].content;
        assert!(
            system.contains("`calculator`: Evaluates an arithmetic expression"),
            "{system}"
        );
        assert!(system.contains("`finish`"), "{system}");
        // The whole first step as the model sees it: tools with their arguments in one line
        // each, the reply's lines as placeholders.
        let shown: Vec<String> = requests[0]
            .messages
            .iter()
            .map(|m| format!("[{:?}]\n{}", m.role, m.content))
            .collect();
        insta::assert_snapshot!(shown.join("\n"));
        assert!(
            last_user(&requests[1]).contains("Observation 1: 48"),
            "{}",
            last_user(&requests[1])
        );
        // The extraction holds the whole trajectory: a successful run's demo.
        let extract = &trace.steps[2];
        let trajectory = extract.inputs.text(TRAJECTORY_FIELD).unwrap();
        assert!(
            trajectory.contains("Tool 1: calculator") && trajectory.contains("Observation 1: 48"),
            "{trajectory}"
        );
    }

    #[tokio::test]
    async fn wrong_tools_bad_arguments_and_failures_become_observations() {
        let (outputs, trace, _) = run(
            &agent(None),
            vec![
                step("Search it.", "search", "{\"query\": \"12 times 4\"}"),
                step("Compute.", "calculator", "{\"expr\": \"12 * 4\"}"),
                step("Again.", "calculator", "{\"expression\": \"12 / 0\"}"),
                step("Again.", "calculator", "not json"),
                step("Done.", "finish", "{}"),
                answer("No luck.", "unknown"),
            ],
        )
        .await;
        assert_eq!(outputs.text("answer").as_deref(), Some("unknown"));
        let trajectory = trace
            .steps
            .last()
            .unwrap()
            .inputs
            .text(TRAJECTORY_FIELD)
            .unwrap();
        for expected in [
            "Observation 1: Your reply could not be read",
            "Observation 2: The arguments of `calculator` do not fit its schema: `expression` is required",
            "Observation 3: `calculator` failed: Division by zero",
            "Observation 4: Your reply could not be read (Field `next_tool_args`: `not json` holds no JSON value)",
        ] {
            assert!(trajectory.contains(expected), "{expected}\n{trajectory}");
        }
    }

    #[tokio::test]
    async fn the_loop_stops_at_max_iters_and_still_answers() {
        let (outputs, trace, _) = run(
            &agent(Some(2)),
            vec![
                step("One.", "calculator", "{\"expression\": \"1 + 1\"}"),
                step("Two.", "calculator", "{\"expression\": \"2 + 2\"}"),
                answer("Out of steps; 4 was the last result.", "4"),
            ],
        )
        .await;
        assert_eq!(outputs.text("answer").as_deref(), Some("4"));
        let react_steps = trace
            .steps
            .iter()
            .filter(|s| s.predictor == "agent.react")
            .count();
        assert_eq!(react_steps, 2);
    }

    #[tokio::test]
    async fn without_a_toolbox_every_tool_is_unknown() {
        let (lm, _) = scripted(vec![
            step("Compute.", "calculator", "{\"expression\": \"1\"}"),
            step("Done.", "finish", "{}"),
            answer("None.", "none"),
        ]);
        let program = agent(None);
        let mut runtime = Runtime::new(LmRegistry::new("scripted/task", Arc::new(lm)));
        runtime.settings.json_fallback = false;
        let output = program
            .run_traced(
                &program.initial_state(),
                &Example::new().with("question", "?"),
                &runtime,
            )
            .await;
        assert_eq!(
            output.result.unwrap().outputs.text("answer").as_deref(),
            Some("none")
        );
        let trajectory = output
            .trace
            .steps
            .last()
            .unwrap()
            .inputs
            .text(TRAJECTORY_FIELD)
            .unwrap();
        assert!(
            trajectory.contains("could not be read") || trajectory.contains("There is no tool"),
            "{trajectory}"
        );
    }

    #[tokio::test]
    async fn providers_with_function_calling_get_the_tools_as_functions() {
        use promptopt_lm::ToolCall;
        assert!(native_tools("openai/gpt-4o-mini"));
        assert!(native_tools("anthropic/claude-sonnet-4"));
        assert!(native_tools("gemini/gemini-2.5-flash"));
        assert!(!native_tools("local/smollm2-135m"));
        let seen = Arc::new(Mutex::new(Vec::<ChatRequest>::new()));
        let log = Arc::clone(&seen);
        let lm = ScriptedLm::calling(move |request| {
            let mut log = log.lock().unwrap();
            log.push(request.clone());
            Ok(match log.len() {
                1 => (
                    "I multiply.".to_string(),
                    vec![ToolCall {
                        name: "calculator".into(),
                        arguments: serde_json::json!({"expression": "12 * 4"}),
                    }],
                ),
                // No function call: the agent is done.
                2 => ("I have it.".to_string(), Vec::new()),
                _ => (answer("The calculator says 48.", "48"), Vec::new()),
            })
        });
        let toolbox = Toolbox::new(vec![Arc::new(Calculator::default())]);
        let runtime = Runtime::new(LmRegistry::new("openai/gpt-test", Arc::new(lm)))
            .with_tools(Arc::new(toolbox));
        let program = agent(None);
        let mut state = program.initial_state();
        state
            .predictor_mut("agent")
            .unwrap()
            .tool_descriptions
            .insert("calculator".into(), "Multiplies and adds exactly.".into());
        let input = Example::new().with("question", "What is 12 times 4?");
        let output = program.run_traced(&state, &input, &runtime).await;
        let outputs = output.result.unwrap().outputs;
        assert_eq!(outputs.text("answer").as_deref(), Some("48"));
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests.len(), 3);
        // Steps offer the tools (with the optimized description) and `finish` as functions.
        let offered: Vec<(&str, &str)> = requests[0]
            .tools
            .iter()
            .map(|t| (t.name.as_str(), t.description.as_str()))
            .collect();
        assert_eq!(
            offered,
            [
                ("calculator", "Multiplies and adds exactly."),
                ("finish", "Ends the steps; the outputs are written next.")
            ]
        );
        assert_eq!(
            requests[0].tools[0].parameters["required"],
            serde_json::json!(["expression"])
        );
        assert!(last_user(&requests[1]).contains("Observation 1: 48"));
        // The extraction is a plain call.
        assert!(requests[2].tools.is_empty());
        let step = &output.trace.steps[0];
        assert_eq!(step.predictor, "agent.react");
        let recorded = step.outputs.as_ref().unwrap();
        assert_eq!(recorded.text(NEXT_TOOL_NAME).as_deref(), Some("calculator"));
        assert_eq!(recorded.text(NEXT_THOUGHT).as_deref(), Some("I multiply."));
        assert_eq!(
            output.trace.steps[1]
                .outputs
                .as_ref()
                .unwrap()
                .text(NEXT_TOOL_NAME)
                .as_deref(),
            Some(FINISH)
        );
    }
}

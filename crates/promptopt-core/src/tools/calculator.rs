//! The built-in `calculator` tool: arithmetic only, parsed by a small recursive-descent parser
//! (no code is ever evaluated). Numbers, `+ - * / % ^`, parentheses, unary minus and the
//! functions `sqrt abs round floor ceil ln log10 exp min max`.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Tool, ToolError};

/// The calculator tool.
#[derive(Debug, Clone)]
pub struct Calculator {
    description: String,
    parameters: Value,
}

impl Default for Calculator {
    fn default() -> Self {
        Self {
            description: "Evaluates an arithmetic expression and returns the number: + - * / % ^, parentheses and sqrt, abs, round, floor, ceil, ln, log10, exp, min, max. Example: (12 * 4 + 3) / 2".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "The arithmetic expression, e.g. 3 * (4 + 5)"}
                },
                "required": ["expression"],
                "additionalProperties": false
            }),
        }
    }
}

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> &Value {
        &self.parameters
    }

    async fn call(&self, arguments: &Value) -> Result<String, ToolError> {
        let expression = arguments["expression"].as_str().unwrap_or_default();
        evaluate(expression)
            .map(format_number)
            .map_err(|message| ToolError::Failed {
                tool: "calculator".into(),
                message,
            })
    }
}

/// A number as the calculator prints it: integers without a fraction, others to 10
/// significant places without trailing zeros.
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let text = format!("{x:.10}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Evaluates `text`; the error says what is wrong and where.
pub fn evaluate(text: &str) -> Result<f64, String> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    if text.trim().is_empty() {
        return Err("The expression is empty".into());
    }
    let value = parser.sum()?;
    parser.skip_spaces();
    if parser.at < parser.chars.len() {
        return Err(format!(
            "Unexpected `{}` at position {}: only numbers, + - * / % ^, parentheses and the functions sqrt, abs, round, floor, ceil, ln, log10, exp, min, max are allowed",
            parser.chars[parser.at],
            parser.at + 1
        ));
    }
    if !value.is_finite() {
        return Err("The result is not a finite number".into());
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn skip_spaces(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_spaces();
        self.chars.get(self.at).copied()
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("Expected `{c}` at position {}", self.at + 1))
        }
    }

    /// sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.at += 1;
            let rhs = self.product()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    /// product := power (('*' | '/' | '%') power)*
    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.power()?;
        while let Some(op @ ('*' | '/' | '%' | '×' | '÷')) = self.peek() {
            self.at += 1;
            let rhs = self.power()?;
            value = match op {
                '*' | '×' => value * rhs,
                _ if rhs == 0.0 => return Err("Division by zero".into()),
                '%' => value % rhs,
                _ => value / rhs,
            };
        }
        Ok(value)
    }

    /// power := unary ('^' power)?   (right-associative; `**` reads as `^`)
    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        let op = self.peek();
        let double_star = op == Some('*') && self.chars.get(self.at + 1) == Some(&'*');
        if op == Some('^') || double_star {
            self.at += if double_star { 2 } else { 1 };
            let exponent = self.power()?;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    /// unary := ('-' | '+') unary | atom
    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('-') => {
                self.at += 1;
                Ok(-self.unary()?)
            }
            Some('+') => {
                self.at += 1;
                self.unary()
            }
            _ => self.atom(),
        }
    }

    /// atom := number | '(' sum ')' | function '(' sum (',' sum)* ')'
    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let value = self.sum()?;
                self.expect(')')?;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.function(),
            Some(c) => Err(format!(
                "Unexpected `{c}` at position {}: expected a number, `(` or a function",
                self.at + 1
            )),
            None => Err("The expression ends too early".into()),
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|c| c.is_ascii_digit() || *c == '.')
        {
            self.at += 1;
        }
        // An exponent: 1e3, 2.5E-4.
        if self
            .chars
            .get(self.at)
            .is_some_and(|c| *c == 'e' || *c == 'E')
        {
            let mut look = self.at + 1;
            if self.chars.get(look).is_some_and(|c| *c == '+' || *c == '-') {
                look += 1;
            }
            if self.chars.get(look).is_some_and(char::is_ascii_digit) {
                self.at = look;
                while self.chars.get(self.at).is_some_and(char::is_ascii_digit) {
                    self.at += 1;
                }
            }
        }
        let text: String = self.chars[start..self.at].iter().collect();
        if self.chars.get(self.at) == Some(&',')
            && self
                .chars
                .get(self.at + 1)
                .is_some_and(char::is_ascii_digit)
            && self
                .chars
                .get(self.at + 4)
                .is_none_or(|c| !c.is_ascii_digit())
            && self.chars[self.at + 1..]
                .iter()
                .take(3)
                .all(char::is_ascii_digit)
        {
            return Err(format!(
                "`{text},…` at position {}: write numbers without thousands separators",
                start + 1
            ));
        }
        text.parse::<f64>()
            .map_err(|_| format!("`{text}` at position {} is not a number", start + 1))
    }

    fn function(&mut self) -> Result<f64, String> {
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.at += 1;
        }
        let name: String = self.chars[start..self.at].iter().collect();
        let arity = match name.as_str() {
            "sqrt" | "abs" | "round" | "floor" | "ceil" | "ln" | "log10" | "exp" => 1,
            "min" | "max" => 2,
            _ => {
                return Err(format!(
                    "`{name}` at position {} is not allowed: only numbers, + - * / % ^, parentheses and the functions sqrt, abs, round, floor, ceil, ln, log10, exp, min, max",
                    start + 1
                ))
            }
        };
        self.expect('(')?;
        let mut args = vec![self.sum()?];
        while self.peek() == Some(',') {
            self.at += 1;
            args.push(self.sum()?);
        }
        self.expect(')')?;
        if args.len() != arity {
            return Err(format!(
                "`{name}` takes {arity} argument{}, not {}",
                if arity == 1 { "" } else { "s" },
                args.len()
            ));
        }
        let x = args[0];
        Ok(match name.as_str() {
            "sqrt" if x < 0.0 => return Err("`sqrt` of a negative number".into()),
            "sqrt" => x.sqrt(),
            "abs" => x.abs(),
            "round" => x.round(),
            "floor" => x.floor(),
            "ceil" => x.ceil(),
            "ln" | "log10" if x <= 0.0 => return Err(format!("`{name}` of a number ≤ 0")),
            "ln" => x.ln(),
            "log10" => x.log10(),
            "exp" => x.exp(),
            "min" => x.min(args[1]),
            _ => x.max(args[1]),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn arithmetic_follows_the_usual_precedence() {
        assert_eq!(evaluate("1 + 2 * 3").unwrap(), 7.0);
        assert_eq!(evaluate("(1 + 2) * 3").unwrap(), 9.0);
        assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(evaluate("2 ** 10").unwrap(), 1024.0);
        assert_eq!(evaluate("-3 + -(-2)").unwrap(), -1.0);
        assert_eq!(evaluate("17 % 5").unwrap(), 2.0);
        assert_eq!(evaluate("1.5e3 / 3").unwrap(), 500.0);
        assert_eq!(evaluate("sqrt(16) + max(2, 7) - min(1, -1)").unwrap(), 12.0);
        assert_eq!(
            evaluate("round(2.5) + floor(-0.5) + ceil(0.2)").unwrap(),
            3.0
        );
        assert_eq!(evaluate("12 × 3 ÷ 4").unwrap(), 9.0);
        assert_eq!(format_number(evaluate("10 / 4").unwrap()), "2.5");
        assert_eq!(format_number(evaluate("1 / 3").unwrap()), "0.3333333333");
        assert_eq!(format_number(evaluate("48 * 2").unwrap()), "96");
    }

    #[test]
    fn anything_but_arithmetic_is_refused_with_the_place() {
        let e = evaluate("__import__('os')").unwrap_err();
        assert!(e.contains("position 1"), "{e}");
        let e = evaluate("2 + system(1)").unwrap_err();
        assert!(e.contains("`system` at position 5 is not allowed"), "{e}");
        let e = evaluate("3; 4").unwrap_err();
        assert!(e.contains("Unexpected `;` at position 2"), "{e}");
        assert_eq!(evaluate("1 / 0").unwrap_err(), "Division by zero");
        assert!(evaluate("").unwrap_err().contains("empty"));
        assert!(evaluate("(1 + 2").unwrap_err().contains("Expected `)`"));
        assert!(evaluate("sqrt(-1)").unwrap_err().contains("negative"));
        assert!(evaluate("max(1)")
            .unwrap_err()
            .contains("takes 2 arguments"));
        assert!(evaluate("1,234 + 1")
            .unwrap_err()
            .contains("thousands separators"));
        assert!(evaluate("1..2").unwrap_err().contains("not a number"));
        assert!(evaluate("10 ^ 400")
            .unwrap_err()
            .contains("not a finite number"));
    }

    #[tokio::test]
    async fn the_tool_answers_with_the_number_or_says_what_is_wrong() {
        let calculator = Calculator::default();
        let answer = calculator
            .call(&json!({"expression": "(12 * 4 + 3) / 2"}))
            .await
            .unwrap();
        assert_eq!(answer, "25.5");
        let error = calculator
            .call(&json!({"expression": "open('/etc/passwd')"}))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`open` at position 1 is not allowed"),
            "{error}"
        );
    }
}

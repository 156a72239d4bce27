//! A condition's text as tokens, each with the column it starts at (1-based, in characters).

use super::error::{Error, Problem};

/// A token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// An integer, `0x` hex or decimal.
    Int(u64),
    /// A name: a register, `cpu`, `hits`, `comm`, `pid`, `tgid`, or a type in a cast.
    Name(String),
    /// A string in double quotes, `\"` and `\\` escaped.
    Str(Box<[u8]>),
    /// An operator or parenthesis.
    Punct(&'static str),
    /// The end of the text.
    End,
}

impl Token {
    /// How an error message names it.
    pub fn describe(&self) -> String {
        match self {
            Token::Int(n) => format!("the number {n}"),
            Token::Name(n) => format!("`{n}`"),
            Token::Str(_) => "a string".into(),
            Token::Punct(p) => format!("'{p}'"),
            Token::End => "the end of the condition".into(),
        }
    }
}

/// Operators, longest first so that `<=` is not read as `<` then `=`.
const PUNCT: &[&str] = &[
    "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "(", ")", "*", "/", "%", "+", "-", "<", ">",
    "&", "^", "|", "~", "!",
];

/// The tokens of `text`, each with its column; the last is [`Token::End`].
pub fn tokens(text: &str) -> Result<Vec<(Token, usize)>, Error> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
            let value = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => word.parse().ok(),
            };
            let value = value.ok_or_else(|| Error {
                column,
                problem: Problem::BadNumber(chars[start..i].iter().collect()),
            })?;
            out.push((Token::Int(value), column));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Token::Name(chars[start..i].iter().collect()), column));
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(Error {
                            column,
                            problem: Problem::UnterminatedString,
                        })
                    }
                    Some('"') => break,
                    Some('\\') => match chars.get(i + 1) {
                        Some(&e @ ('"' | '\\')) => {
                            s.push(e);
                            i += 1;
                        }
                        _ => {
                            return Err(Error {
                                column: i + 1,
                                problem: Problem::BadEscape,
                            })
                        }
                    },
                    Some(&c) => s.push(c),
                }
                i += 1;
            }
            i += 1;
            out.push((Token::Str(s.into_bytes().into_boxed_slice()), column));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(p) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
                return Err(Error {
                    column,
                    problem: Problem::UnexpectedChar(c),
                });
            };
            i += p.chars().count();
            out.push((Token::Punct(p), column));
        }
    }
    out.push((Token::End, chars.len() + 1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_numbers_names_operators_and_strings() {
        let got: Vec<Token> = tokens("rdi<=0x1F && comm != \"a\\\"b\"")
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            got,
            vec![
                Token::Name("rdi".into()),
                Token::Punct("<="),
                Token::Int(0x1f),
                Token::Punct("&&"),
                Token::Name("comm".into()),
                Token::Punct("!="),
                Token::Str(b"a\"b".to_vec().into()),
                Token::End,
            ]
        );
    }

    #[test]
    fn columns_are_one_based_characters() {
        let cols: Vec<usize> = tokens("a  == 1").unwrap().iter().map(|t| t.1).collect();
        assert_eq!(cols, vec![1, 4, 7, 8]);
    }

    #[test]
    fn bad_input_says_where() {
        assert_eq!(tokens("rdi == 12x").unwrap_err().column, 8);
        assert_eq!(tokens("rdi @ 1").unwrap_err().column, 5);
        assert_eq!(tokens("comm == \"abc").unwrap_err().column, 9);
        assert_eq!(tokens("99999999999999999999").unwrap_err().column, 1);
    }
}

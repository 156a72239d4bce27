//! A condition's tokens as a syntax tree: precedence climbing, with C's precedence and
//! left-to-right grouping.

use super::ast::{BinOp, Expr, Field, Load, Reg, UnOp, BINARY};
use super::error::{Error, Problem};
use super::lexer::{tokens, Token};
use super::typecheck::{self, Typed};

/// How deep parentheses and prefix operators may nest (a bound on the recursion).
pub const MAX_DEPTH: usize = 256;

/// The longest condition, in characters: a bound on the tree's depth, so that checking and
/// evaluating it cannot run out of stack.
pub const MAX_LEN: usize = 1024;

/// The checked syntax tree of `text`.
pub fn parse(text: &str) -> Result<Expr, Error> {
    if let Some((at, _)) = text.char_indices().nth(MAX_LEN) {
        return Err(Error {
            column: text[..at].chars().count() + 1,
            problem: Problem::TooLong(MAX_LEN),
        });
    }
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
        depth: 0,
    };
    if p.peek() == &Token::End {
        return Err(p.expected("an expression"));
    }
    let e = p.expr(0)?;
    match p.peek() {
        Token::End => typecheck::top(e),
        _ => Err(p.expected("an operator or the end of the condition")),
    }
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens
            .get(self.at)
            .map(|(t, _)| t)
            .unwrap_or(&Token::End)
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map(|(_, c)| *c)
            .unwrap_or(1)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn expected(&self, what: &str) -> Error {
        Error {
            column: self.column(),
            problem: Problem::Expected {
                expected: what.to_owned(),
                found: self.peek().describe(),
            },
        }
    }

    fn expect(&mut self, punct: &'static str, what: &str) -> Result<(), Error> {
        match self.peek() {
            Token::Punct(p) if *p == punct => {
                self.next();
                Ok(())
            }
            _ => Err(self.expected(what)),
        }
    }

    fn binary_op(&self) -> Option<(BinOp, u8, &'static str)> {
        match self.peek() {
            Token::Punct(p) => BINARY
                .iter()
                .find(|(t, _, _)| t == p)
                .map(|&(t, op, power)| (op, power, t)),
            _ => None,
        }
    }

    /// Operators binding tighter than `min`, grouped to the left.
    fn expr(&mut self, min: u8) -> Result<Typed, Error> {
        let mut lhs = self.unary()?;
        while let Some((op, power, text)) = self.binary_op() {
            if power <= min {
                break;
            }
            self.next();
            if self.peek() == &Token::End {
                return Err(self.expected(&format!("an expression after '{text}'")));
            }
            let rhs = self.expr(power)?;
            lhs = typecheck::binary(op, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.expected(&format!(
                "at most {MAX_DEPTH} nested parentheses and prefix operators"
            )));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn unary(&mut self) -> Result<Typed, Error> {
        let column = self.column();
        let op = match self.peek() {
            Token::Punct("-") => Some(UnOp::Neg),
            Token::Punct("~") => Some(UnOp::Not),
            Token::Punct("!") => Some(UnOp::LogicalNot),
            Token::Punct("*") => {
                self.next();
                return self.nested(|p| p.load(column));
            }
            _ => None,
        };
        match op {
            Some(op) => {
                self.next();
                let e = self.nested(|p| p.unary())?;
                typecheck::unary(op, e, column)
            }
            None => self.primary(),
        }
    }

    /// After `*`: `(TYPE *)` then the address.
    fn load(&mut self, column: usize) -> Result<Typed, Error> {
        self.expect("(", "'(' and a type after '*', as in *(u32 *)(rdi + 8)")?;
        let type_column = self.column();
        let load = match self.next() {
            Token::Name(name) => Load::named(&name).ok_or(Error {
                column: type_column,
                problem: Problem::UnknownType(name),
            })?,
            _ => {
                self.at -= 1;
                return Err(self.expected("a type (u8, u16, u32, u64, i8, i16, i32, i64)"));
            }
        };
        self.expect("*", "'*' after the type, as in *(u32 *)")?;
        self.expect(")", "')' after the type's '*'")?;
        if self.peek() == &Token::End {
            return Err(self.expected(&format!("an address after *({load} *)")));
        }
        let addr = self.unary()?;
        typecheck::load(load, addr, column)
    }

    fn primary(&mut self) -> Result<Typed, Error> {
        let column = self.column();
        let leaf = |e| Ok(Typed::leaf(e, column));
        match self.next() {
            Token::Int(n) => leaf(Expr::Int(n)),
            Token::Str(s) => leaf(Expr::Str(s)),
            Token::Name(name) => match name.as_str() {
                "cpu" => leaf(Expr::Cpu),
                "hits" => leaf(Expr::Hits),
                "comm" => leaf(Expr::Task(Field::Comm)),
                "pid" => leaf(Expr::Task(Field::Pid)),
                "tgid" => leaf(Expr::Task(Field::Tgid)),
                _ => match Reg::named(&name) {
                    Some(r) => leaf(Expr::Reg(r)),
                    None => Err(Error {
                        column,
                        problem: Problem::UnknownName(name),
                    }),
                },
            },
            Token::Punct("(") => {
                if self.peek() == &Token::End {
                    return Err(self.expected("an expression after '('"));
                }
                let mut e = self.nested(|p| p.expr(0))?;
                self.expect(")", "')'")?;
                e.column = column;
                Ok(e)
            }
            _ => {
                self.at -= 1;
                Err(self.expected("an expression"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        parse(text).unwrap().to_string()
    }

    #[test]
    fn precedence_and_grouping_are_cs() {
        assert_eq!(shown("1 + 2 * 3"), "(0x1 + (0x2 * 0x3))");
        assert_eq!(shown("1 - 2 - 3"), "((0x1 - 0x2) - 0x3)");
        assert_eq!(shown("rdi & 1 == 0"), "(rdi & (0x1 == 0x0))");
        assert_eq!(
            shown(
                "a1 || b && c"
                    .replace("a1", "rax")
                    .replace('b', "rbx")
                    .replace('c', "rcx")
                    .as_str()
            ),
            "(rax || (rbx && rcx))"
        );
        assert_eq!(shown("-rdi << 2"), "(-(rdi) << 0x2)");
        assert_eq!(
            shown("*(u32 *)(rsp + 8) == 5"),
            "(*(u32 *)((rsp + 0x8)) == 0x5)"
        );
        assert_eq!(shown("*(i64*)rsp"), "*(i64 *)(rsp)");
        assert_eq!(shown("!(hits % 10)"), "!((hits % 0xa))");
    }

    #[test]
    fn errors_say_what_was_expected_and_where() {
        let e = parse("rdi ==").unwrap_err();
        assert_eq!(e.column, 7);
        assert_eq!(
            e.to_string(),
            "expected an expression after '==', found the end of the condition at column 7"
        );
        assert_eq!(parse("").unwrap_err().column, 1);
        assert_eq!(parse("(rdi").unwrap_err().column, 5);
        assert_eq!(parse("rdi rsi").unwrap_err().column, 5);
        assert!(matches!(
            parse("rdx == foo").unwrap_err().problem,
            Problem::UnknownName(_)
        ));
        let e = parse("*(u24 *)rdi").unwrap_err();
        assert_eq!(
            (e.column, matches!(e.problem, Problem::UnknownType(_))),
            (3, true)
        );
        assert_eq!(parse("*(u32)rdi").unwrap_err().column, 6);
        assert_eq!(parse("1 + )").unwrap_err().column, 5);
    }

    #[test]
    fn type_errors_point_at_the_operand() {
        let e = parse("rdi == 1 && comm").unwrap_err();
        assert_eq!((e.column, e.problem), (13, Problem::CommHere));
        let e = parse("comm < \"a\"").unwrap_err();
        assert_eq!((e.column, e.problem), (1, Problem::CommHere));
        let e = parse("rdi + \"a\"").unwrap_err();
        assert_eq!((e.column, e.problem), (7, Problem::StringHere));
        let e = parse("comm == \"a_very_long_process_name\"").unwrap_err();
        assert_eq!(e.column, 9);
        assert!(matches!(e.problem, Problem::CommTooLong(_)));
        assert!(parse("\"init\" != comm").is_ok());
        assert!(parse("(comm == \"init\") && pid > 1").is_ok());
    }

    #[test]
    fn signedness_follows_the_operands() {
        let signed = |text: &str| match parse(text).unwrap() {
            Expr::Binary { signed, .. } => signed,
            e => panic!("{e:?}"),
        };
        assert!(!signed("rdi < 1"));
        assert!(signed("*(i32 *)rsp < 0"));
        assert!(signed("pid + 1"));
        assert!(signed("(pid + 1) < 0"));
        assert!(!signed("(pid < 1) < rdi"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(400), ")".repeat(400));
        assert!(parse(&deep).is_err());
        let negs = format!("{}1", "-".repeat(400));
        assert!(parse(&negs).is_err());
        let long = format!("1{}", "+1".repeat(10_000));
        assert_eq!(parse(&long).unwrap_err().column, MAX_LEN + 1);
        let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&ok).is_ok());
    }
}

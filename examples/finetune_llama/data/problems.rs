//! The built-in task: seeded, GSM8K-like arithmetic word problems. Each has a question, short
//! reasoning with the intermediate equations, and a final `#### answer` line, like GSM8K's format.
//! One- and two-step problems over one-digit operands keep it learnable by a tiny model in minutes.

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::data::Example;

const NAMES: [&str; 12] = [
    "Ann", "Ben", "Cal", "Dora", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Leo", "Mia",
];
const ITEMS: [&str; 10] = [
    "apples", "pens", "cards", "eggs", "books", "coins", "shells", "stamps", "cups", "kites",
];

/// One problem: (question, reasoning ending in the answer, answer).
fn problem(rng: &mut StdRng) -> (String, String, i64) {
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let item = ITEMS[rng.random_range(0..ITEMS.len())];
    let mut digit = |from: i64, to: i64| rng.random_range(from..=to);
    match digit(0, 5) {
        0 => {
            let (a, b) = (digit(1, 9), digit(1, 9));
            let q = format!("{name} has {a} {item} and gets {b} more. How many {item} now?");
            (q, format!("{a} + {b} = {}.", a + b), a + b)
        }
        1 => {
            let a = digit(5, 18);
            let b = digit(1, 9.min(a - 1));
            let q = format!("{name} has {a} {item} and gives away {b}. How many are left?");
            (q, format!("{a} - {b} = {}.", a - b), a - b)
        }
        2 => {
            let (a, b) = (digit(2, 6), digit(2, 6));
            let q = format!("{name} buys {a} bags of {b} {item}. How many {item}?");
            (q, format!("{a} * {b} = {}.", a * b), a * b)
        }
        3 => {
            let (b, each) = (digit(2, 5), digit(2, 5));
            let a = b * each;
            let q = format!("{name} shares {a} {item} among {b} friends. How many each?");
            (q, format!("{a} / {b} = {each}."), each)
        }
        4 => {
            let (a, b, c) = (digit(1, 9), digit(1, 9), digit(1, 9));
            let q = format!("{name} has {a} {item}, finds {b} and buys {c}. How many {item}?");
            let ab = a + b;
            (
                q,
                format!("{a} + {b} = {ab}. {ab} + {c} = {}.", ab + c),
                ab + c,
            )
        }
        _ => {
            let (a, b) = (digit(2, 5), digit(2, 5));
            let c = digit(1, 9.min(a * b - 1));
            let q = format!("{name} has {a} boxes of {b} {item} and loses {c}. How many are left?");
            let ab = a * b;
            (
                q,
                format!("{a} * {b} = {ab}. {ab} - {c} = {}.", ab - c),
                ab - c,
            )
        }
    }
}

/// `n` distinct problems from `seed`, as prompt/response examples. The response is the reasoning
/// followed by ` #### answer`; the reference answer is the number.
pub fn generate(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = std::collections::HashSet::new();
    let mut examples = Vec::with_capacity(n);
    let mut attempts = 0usize;
    while examples.len() < n && attempts < n * 50 {
        attempts += 1;
        let (question, reasoning, answer) = problem(&mut rng);
        if !seen.insert(question.clone()) {
            continue; // held-out questions must not also appear in training
        }
        examples.push(Example {
            prompt: format!("Q: {question}\nA: "),
            response: format!("{reasoning} #### {answer}"),
            answer: answer.to_string(),
        });
    }
    examples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_seeded_distinct_and_correct() {
        let a = generate(300, 7);
        assert_eq!(a.len(), 300);
        assert_eq!(a, generate(300, 7));
        assert_ne!(a, generate(300, 8));
        let questions: std::collections::HashSet<_> = a.iter().map(|e| &e.prompt).collect();
        assert_eq!(questions.len(), a.len());
        for example in &a {
            // The last equation's right-hand side is the answer.
            let last = example.response.split(" = ").last().unwrap();
            assert_eq!(last, format!("{}. #### {}", example.answer, example.answer));
            assert!(example.answer.parse::<i64>().unwrap() >= 0);
        }
    }
}

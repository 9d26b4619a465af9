//! A well-formed component of another world (no `vigil:policy/policy`
//! export), for the host's load-time checks.

wit_bindgen::generate!({ path: "wit", world: "greeter" });

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);

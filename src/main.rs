//! The `discocache` binary: a thin shell over [`discocache::cli`].

fn main() -> std::process::ExitCode {
    discocache::cli::main()
}

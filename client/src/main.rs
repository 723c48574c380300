//! `herald`: the command-line client of a Herald cluster. Everything lives
//! in [`cli`]; this file only hands over to it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

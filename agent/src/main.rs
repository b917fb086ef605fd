fn main() -> std::process::ExitCode {
    eastwatch::main()
}

//! An interactive shell as the main process under a pseudo-terminal, as with `docker run -it`:
//! the init hands the terminal's foreground to the shell, so Ctrl-C reaches the shell's job and
//! not the init.

use init_tests::{Launch, eventually, find_process};

#[test]
fn ctrl_c_reaches_the_shells_job_and_not_the_init() {
    let (mut init, mut terminal) = Launch::new::<&str>(&[])
        .env("SHELL", "/bin/sh")
        .env("PS1", "prompt$ ")
        .env("NIX2GPU_LOG", "debug")
        .start_on_terminal();
    init.wait_for_line("main: started");
    terminal.type_text("sleep 101\n");
    eventually(
        || find_process(&["sleep", "101"]).is_some(),
        || format!("the shell never ran sleep; output: {:?}", init.output()),
    );
    terminal.type_text("\x03");
    // The shell survived the Ctrl-C and saw its job die of SIGINT (128 + 2). The quotes keep
    // the terminal's echo of the typed line from matching the output.
    terminal.type_text("echo after\"\"sleep $?\n");
    init.wait_for_line("aftersleep 130");
    terminal.type_text("exit 7\n");
    assert_eq!(init.wait_exit(), 7);
    let output = init.output();
    assert!(!output.iter().any(|l| l.contains("received SIGINT")), "the init got the Ctrl-C: {output:?}");
    assert!(output.iter().any(|l| l.contains("main: exited with code 7")), "{output:?}");
}

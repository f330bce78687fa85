/* hello-c: a WASI preview 1 command written in C. It prints its arguments and
 * the environment variables it was given, counts the lines of standard
 * input, and exits with the code in HELLO_EXIT (default 0). */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("hello from C on wasi p1\n");
    for (int i = 0; i < argc; i++) {
        printf("arg[%d]: %s\n", i, argv[i]);
    }
    for (char **env = environ; env && *env; env++) {
        printf("env: %s\n", *env);
    }
    int lines = 0;
    int c;
    while ((c = getchar()) != EOF) {
        if (c == '\n') {
            lines++;
        }
    }
    printf("stdin lines: %d\n", lines);
    fprintf(stderr, "hello-c: done\n");
    const char *code = getenv("HELLO_EXIT");
    return code ? atoi(code) : 0;
}

/* Cooperative interruption of runs from the command line (see cli.h). */
#include "cli/cli.h"
#include <signal.h>
#include <stddef.h>

static sd_context *volatile interrupt_ctx;

static void on_signal(int sig)
{
    if (interrupt_ctx)
        sd_context_interrupt(interrupt_ctx);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

void cli_catch_signals(sd_context *ctx, bool on)
{
    interrupt_ctx = on ? ctx : NULL;
    struct sigaction sa = {.sa_handler = on ? on_signal : SIG_DFL};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

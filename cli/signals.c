/* Cooperative interruption of runs from the command line (see cli.h). */
#include "cli/cli.h"
#include <signal.h>
#include <stddef.h>

static sd_context *volatile interrupt_ctx;
static struct sigaction saved_int, saved_term; /* the actions before cli_catch_signals(ctx, true) */

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
    if (!on) {
        sigaction(SIGINT, &saved_int, NULL);
        sigaction(SIGTERM, &saved_term, NULL);
        return;
    }
    /* SA_RESTART: a signal only sets the flag; a write in progress (the list of files written,
     * on a slow pipe) completes instead of failing with EINTR. */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &saved_int);
    sigaction(SIGTERM, &sa, &saved_term);
}

/* wakeup.c: eventfd (Linux) or self-pipe (elsewhere) used to wake event loops. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#if defined(__linux__)
#include <sys/eventfd.h>
#define OFFLOAD_HAVE_EVENTFD 1
#endif

#include "wakeup.h"

int
wakeup_open(wakeup *w)
{
#ifdef OFFLOAD_HAVE_EVENTFD
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    w->read_fd = w->write_fd = fd;
    return 0;
#else
    int fds[2];
    if (pipe(fds) < 0) {
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    w->read_fd = fds[0];
    w->write_fd = fds[1];
    return 0;
#endif
}

void
wakeup_close(wakeup *w)
{
    if (w->read_fd >= 0) {
        close(w->read_fd);
    }
    if (w->write_fd >= 0 && w->write_fd != w->read_fd) {
        close(w->write_fd);
    }
    w->read_fd = w->write_fd = -1;
}

void
wakeup_signal(wakeup *w)
{
#ifdef OFFLOAD_HAVE_EVENTFD
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(w->write_fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
#else
    char byte = 1;
    ssize_t n;
    do {
        n = write(w->write_fd, &byte, 1);
    } while (n < 0 && errno == EINTR);
#endif
    /* EAGAIN means the fd is already readable: the wakeup is not lost. */
    (void)n;
}

void
wakeup_clear(wakeup *w)
{
    char buf[64];
    ssize_t n;
    do {
        n = read(w->read_fd, buf, sizeof(buf));
    } while (n > 0 || (n < 0 && errno == EINTR));
}

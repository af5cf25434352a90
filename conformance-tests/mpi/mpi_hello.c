/* One MPI rank reports where it runs: rank, size, host, mount namespace, its
 * launcher's parent (the common parent of a node's ranks), its CPUs, and the
 * result of one MPI_Allreduce (the sum of rank+1 over all ranks).
 * MPI_HELLO_SLEEP_MS: sleep that long before MPI_Finalize (a rank to kill mid-run).
 * MPI_HELLO_EXIT: the last rank's exit code after MPI_Finalize. */
#define _GNU_SOURCE
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long parent_of(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    long ppid = -1;
    if (p)
        sscanf(p + 2, "%*c %ld", &ppid);
    return ppid;
}

/* The launcher's command line, NULs as spaces (e.g. "mcexec -n 4 ..."). */
static void cmdline_of(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(out, 1, len - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (out[i] == 0 || out[i] == ' ')
            out[i] = '_';
    while (n > 0 && out[n - 1] == '_')
        n--;
    out[n] = 0;
}

static void cpu_list(char *out, size_t len)
{
    const char *sim = getenv("LWK_SIM_LWK_CPUS");
    if (sim) {
        snprintf(out, len, "%s", sim);
        return;
    }
    cpu_set_t set;
    out[0] = 0;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set)) {
            size_t l = strlen(out);
            snprintf(out + l, len - l, "%s%d", l ? "," : "", c);
        }
}

int main(int argc, char **argv)
{
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    char host[256] = "";
    gethostname(host, sizeof host);
    struct stat st;
    unsigned long mntns = stat("/proc/self/ns/mnt", &st) == 0 ? (unsigned long)st.st_ino : 0;
    char cpus[1024];
    cpu_list(cpus, sizeof cpus);

    char launcher[512];
    cmdline_of(getppid(), launcher, sizeof launcher);

    long mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    printf("rank=%d size=%d host=%s mntns=%lu launcher=%ld launcher_parent=%ld cpus=%s sum=%ld launcher_cmd=%s\n",
           rank, size, host, mntns, (long)getppid(), parent_of(getppid()), cpus, sum, launcher);
    fflush(stdout);
    const char *nap = getenv("MPI_HELLO_SLEEP_MS");
    if (nap)
        usleep((useconds_t)atoi(nap) * 1000);
    MPI_Finalize();
    const char *code = getenv("MPI_HELLO_EXIT");
    return code && atoi(code) >= 0 && rank == size - 1 ? atoi(code) : 0;
}

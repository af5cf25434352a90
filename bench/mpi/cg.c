/* Conjugate-gradient solve of the 3-D 7-point Laplacian, the workload of bench/run's
 * parity section. The matrix is stored (CSR, as HPCG does), not applied matrix-free,
 * so that each iteration streams ~90 bytes per row through memory; the grid is split
 * across ranks in z slabs with one ghost plane on each side, exchanged every
 * iteration with MPI_Sendrecv; dot products are MPI_Allreduce.
 *
 *   cg [NX [ITERS]]     (default 96 and 200: NX^3 rows, fixed iteration count)
 *
 * Prints one line: ranks, rows, iterations, the final residual norm, and the solve
 * time in seconds (MPI_Wtime around the iterations only), which is what bench/run
 * compares between a native run and a run through conexec. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static void die(const char *what)
{
    fprintf(stderr, "cg: %s\n", what);
    MPI_Abort(MPI_COMM_WORLD, 2);
}

static double dot(const double *a, const double *b, long n)
{
    double s = 0, g;
    for (long i = 0; i < n; i++)
        s += a[i] * b[i];
    MPI_Allreduce(&s, &g, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return g;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    long nx = argc > 1 ? atol(argv[1]) : 96;
    int iters = argc > 2 ? atoi(argv[2]) : 200;
    if (nx < 4 || iters < 1 || nx < size)
        die("usage: cg [NX>=4 and >= ranks [ITERS>=1]]");

    /* This rank's planes: z0 .. z0+nz-1. */
    long nz = nx / size + (rank < nx % size);
    long z0 = rank * (nx / size) + (rank < nx % size ? rank : nx % size);
    long plane = nx * nx, rows = nz * plane;
    /* Vectors p carry a ghost plane before and after the local rows. */
    long ext = rows + 2 * plane;

    long *rowptr = malloc((rows + 1) * sizeof *rowptr);
    int *col = malloc(rows * 7 * sizeof *col);
    double *val = malloc(rows * 7 * sizeof *val);
    double *x = calloc(rows, sizeof *x), *r = calloc(rows, sizeof *r);
    double *p = calloc(ext, sizeof *p), *ap = malloc(rows * sizeof *ap);
    if (!rowptr || !col || !val || !x || !r || !p || !ap)
        die("out of memory");

    long k = 0;
    for (long lz = 0; lz < nz; lz++)
        for (long y = 0; y < nx; y++)
            for (long xx = 0; xx < nx; xx++) {
                long row = lz * plane + y * nx + xx, gz = z0 + lz;
                rowptr[row] = k;
                /* Column indices point into the extended vector (ghost plane first). */
                long c = row + plane;
                if (gz > 0) { col[k] = (int)(c - plane); val[k++] = -1; }
                if (y > 0) { col[k] = (int)(c - nx); val[k++] = -1; }
                if (xx > 0) { col[k] = (int)(c - 1); val[k++] = -1; }
                col[k] = (int)c; val[k++] = 6;
                if (xx < nx - 1) { col[k] = (int)(c + 1); val[k++] = -1; }
                if (y < nx - 1) { col[k] = (int)(c + nx); val[k++] = -1; }
                if (gz < nx - 1) { col[k] = (int)(c + plane); val[k++] = -1; }
            }
    rowptr[rows] = k;

    /* b = A * ones, so the exact solution is all ones; x0 = 0, r0 = b. */
    for (long i = 0; i < ext; i++)
        p[i] = 0;
    for (long i = 0; i < rows; i++)
        p[plane + i] = 1;
    int below = rank > 0 ? rank - 1 : MPI_PROC_NULL;
    int above = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
#define HALO()                                                                          \
    do {                                                                                \
        MPI_Sendrecv(p + plane, (int)plane, MPI_DOUBLE, below, 0, p + plane + rows,     \
                     (int)plane, MPI_DOUBLE, above, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE); \
        MPI_Sendrecv(p + rows, (int)plane, MPI_DOUBLE, above, 1, p, (int)plane,         \
                     MPI_DOUBLE, below, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);          \
    } while (0)
#define SPMV()                                                                          \
    do {                                                                                \
        HALO();                                                                         \
        for (long i = 0; i < rows; i++) {                                               \
            double s = 0;                                                               \
            for (long j = rowptr[i]; j < rowptr[i + 1]; j++)                            \
                s += val[j] * p[col[j]];                                                \
            ap[i] = s;                                                                  \
        }                                                                               \
    } while (0)
    SPMV();
    for (long i = 0; i < rows; i++) {
        r[i] = ap[i];
        p[plane + i] = r[i];
    }
    double rr = dot(r, r, rows), rr0 = rr;

    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    int it;
    for (it = 0; it < iters && rr > 0; it++) {
        SPMV();
        double alpha = rr / dot(p + plane, ap, rows);
        for (long i = 0; i < rows; i++) {
            x[i] += alpha * p[plane + i];
            r[i] -= alpha * ap[i];
        }
        double rr1 = dot(r, r, rows), beta = rr1 / rr;
        rr = rr1;
        for (long i = 0; i < rows; i++)
            p[plane + i] = r[i] + beta * p[plane + i];
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t = MPI_Wtime() - t0;

    /* The error against the known solution says the solve really happened. */
    double e = 0;
    for (long i = 0; i < rows; i++)
        e += (x[i] - 1) * (x[i] - 1);
    double eg;
    MPI_Allreduce(&e, &eg, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("cg ranks=%d rows=%ld iters=%d relres=%.3e err=%.3e solve_s=%.6f\n", size,
               nx * nx * nx, it, sqrt(rr / rr0), sqrt(eg / (double)(nx * nx * nx)), t);
    MPI_Finalize();
    return 0;
}

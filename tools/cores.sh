# Sourced by the build and test scripts (not run): how many CPUs this process may use, for
# their parallel jobs.
#   usable_cores   prints the count: the affinity mask's CPUs (GNU nproc) with
#                  OMP_NUM_THREADS and OMP_THREAD_LIMIT unset, since nproc also obeys those,
#                  and tools/test.sh sets OMP_NUM_THREADS for the kernels' thread teams, not
#                  for the compiler's jobs.
usable_cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

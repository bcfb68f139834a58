/*
 * replay.c -- runs the fuzz harness (fuzz_snapshot.c) over input files
 * without libFuzzer, so that the seed corpus and the regression inputs in
 * crashes/ run as ordinary tests under any compiler and sanitizer.
 * Usage: fuzz_replay FILE|DIR...  (a directory: every file in it but
 * hidden ones and *.md notes).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    /* an exact-size copy, as libFuzzer passes: ASan then sees a read one
     * byte past the input */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return 1;
    }
    memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    printf("ok %s (%zu bytes)\n", path, len);
    return 0;
}

static int replay(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        perror(path);
        return 1;
    }
    if (!S_ISDIR(sb.st_mode))
        return replay_file(path);
    DIR *d = opendir(path);
    struct dirent *e;
    int bad = 0;
    if (!d) {
        perror(path);
        return 1;
    }
    while ((e = readdir(d)) != NULL) {
        char sub[4096];
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n > 3 && strcmp(e->d_name + n - 3, ".md") == 0))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        bad |= replay_file(sub);
    }
    closedir(d);
    return bad;
}

int main(int argc, char **argv)
{
    int bad = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        bad |= replay(argv[i]);
    return bad;
}

/* Runs in L1 (boot-l1.sh builds it static): sends the files of a directory out on stdout, the
 * serial console, as they grow, so the host can rebuild them even if L1 dies a moment later.
 *
 *   vmx-stream DIR STOPFILE
 *
 * Every new byte of every regular file in DIR (hidden ones excepted) goes out once, in lines
 * `VMX-C NAME|DATA`: DATA is the bytes with everything outside printable ASCII, and the
 * backslash, written \xHH. A line ends wherever a read ended, so half-written lines (a test that
 * is running) come out too; a new file first gets a line with no DATA. Every 10 s of L1's time
 * it prints `VMX-L1-ALIVE`, so the host can tell a hung L1 from a quiet one. When STOPFILE exists and one more pass found nothing new, it exits.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILES 1024

static struct { char name[256]; off_t sent; } files[MAX_FILES];
static int nfiles;

/* Sends what `name` got since the last pass; returns how many bytes that was. */
static long send_new(const char *dir, int i) {
    char path[4096], buf[512], line[4096];
    snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    long total = 0;
    ssize_t n;
    while ((n = pread(fd, buf, sizeof buf, files[i].sent)) > 0) {
        int len = snprintf(line, sizeof line, "VMX-C %s|", files[i].name);
        for (ssize_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)buf[k];
            if (c >= 0x20 && c < 0x7f && c != '\\') line[len++] = (char)c;
            else len += snprintf(line + len, sizeof line - len, "\\x%02x", c);
        }
        line[len++] = '\n';
        if (write(1, line, len) != len) break;
        files[i].sent += n;
        total += n;
    }
    close(fd);
    return total;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    for (unsigned pass = 1;; pass++) {
        if (pass % 20 == 0) {
            printf("VMX-L1-ALIVE\n");
            fflush(stdout);
        }
        int stopping = access(argv[2], F_OK) == 0;
        long moved = 0;
        DIR *d = opendir(argv[1]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            struct stat st;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[1], e->d_name);
            if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            int i = 0;
            while (i < nfiles && strcmp(files[i].name, e->d_name) != 0) i++;
            if (i == nfiles) {
                if (nfiles == MAX_FILES || strlen(e->d_name) >= sizeof files[0].name) continue;
                snprintf(files[nfiles++].name, sizeof files[0].name, "%s", e->d_name);
                printf("VMX-C %s|\n", e->d_name); /* an empty file comes out too */
                fflush(stdout);
            }
            moved += send_new(argv[1], i);
        }
        if (d) closedir(d);
        if (stopping && moved == 0) return 0;
        usleep(500000);
    }
}

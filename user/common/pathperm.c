/* Private-directory checks behind pathperm.h: walks a directory and its ancestors with stat(2),
 * in the spirit of OpenSSH's StrictModes. Symbolic links are followed (stat), so a link is judged
 * by what it points to; the link's own directory is judged as an ancestor. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/pathperm.h"

/* One directory: owned by root or `uid`; writable only by its owner, or, for an ancestor, sticky. */
static int check_one(const char *dir, uid_t uid, bool ancestor, char *why, size_t len)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		snprintf(why, len, "%s: %s", dir, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, len, "%s: not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_uid != 0 && st.st_uid != uid) {
		snprintf(why, len, "%s: owned by uid %u (expected root or uid %u)", dir,
			 (unsigned)st.st_uid, (unsigned)uid);
		return -EPERM;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(ancestor && (st.st_mode & S_ISVTX))) {
		snprintf(why, len, "%s: writable by %s (mode %04o)", dir,
			 st.st_mode & S_IWOTH ? "others" : "its group",
			 (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

int pathperm_private_dir(const char *dir, uid_t uid, char *why, size_t len)
{
	char buf[PATH_MAX], *slash;
	bool ancestor = false;
	struct stat st;
	int err;

	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf) || buf[0] != '/') {
		snprintf(why, len, "%s: not an absolute path", dir);
		return -EINVAL;
	}
	/* A missing directory is created (0700, ours) below its nearest existing one, which is then
	 * an ancestor: sticky is enough there, since no one else can remove or rename what we make.
	 * A directory someone creates first is theirs, and the check after creating refuses it. */
	while (stat(buf, &st) < 0 && errno == ENOENT && strcmp(buf, "/")) {
		slash = strrchr(buf, '/');
		slash[slash == buf] = '\0'; /* "/a" -> "/" */
		ancestor = true;
	}
	for (;;) {
		err = check_one(buf, uid, ancestor, why, len);
		if (err || !strcmp(buf, "/"))
			return err;
		slash = strrchr(buf, '/');
		slash[slash == buf] = '\0';
		ancestor = true;
	}
}

int pathperm_private_parent(const char *path, uid_t uid, char *why, size_t len)
{
	char dir[PATH_MAX], *slash;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir) ||
	    !(slash = strrchr(dir, '/'))) {
		snprintf(why, len, "%s: not an absolute path", path);
		return -EINVAL;
	}
	slash[slash == dir] = '\0';
	return pathperm_private_dir(dir, uid, why, len);
}

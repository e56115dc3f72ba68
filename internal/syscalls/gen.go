package syscalls

//go:generate sh gen.sh

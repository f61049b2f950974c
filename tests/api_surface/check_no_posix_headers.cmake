# Fails when a public header (INCLUDE_DIR/boxlite/**) includes a POSIX system header: such code
# belongs in lib/, behind a declaration. Standard C++ headers (<csignal>, <ctime>, ...) are fine.
#   cmake -DINCLUDE_DIR=<repo>/include -P check_no_posix_headers.cmake
cmake_minimum_required(VERSION 3.20)
set(forbidden
  unistd.h fcntl.h signal.h poll.h dirent.h pthread.h sched.h termios.h pwd.h grp.h dlfcn.h
  pty.h spawn.h syslog.h netdb.h ifaddrs.h semaphore.h mqueue.h aio.h utime.h utmp.h
  linux/ sys/ netinet/ arpa/ net/)

# Headers that another change moves out of include/ (none now). Remove each line when that move
# lands.
set(pending_move)

file(GLOB_RECURSE headers RELATIVE ${INCLUDE_DIR} ${INCLUDE_DIR}/boxlite/*.hpp ${INCLUDE_DIR}/boxlite/*.h)
set(violations "")
foreach(header ${headers})
  if(header IN_LIST pending_move)
    continue()
  endif()
  file(STRINGS ${INCLUDE_DIR}/${header} lines REGEX "^[ \t]*#[ \t]*include[ \t]*<")
  foreach(line ${lines})
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*<([^>]+)>.*" "\\1" name "${line}")
    foreach(bad ${forbidden})
      string(FIND "${name}" "${bad}" at)
      if(at EQUAL 0)
        list(APPEND violations "${header}: #include <${name}>")
      endif()
    endforeach()
  endforeach()
endforeach()
list(LENGTH headers count)
if(violations)
  list(JOIN violations "\n  " text)
  message(FATAL_ERROR "public headers include POSIX system headers (move that code into lib/):\n  ${text}")
endif()
message(STATUS "${count} public headers, none includes a POSIX system header")

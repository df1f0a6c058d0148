# Writes OUT, a source file defining gppf::build::kGitSha (the short commit) and kGitDirty (whether
# tracked files differed from it) when this build ran. Run at every build: values taken at configure
# time go stale with each commit and edit. The file is replaced only when the answer changes, so an
# unchanged tree recompiles nothing.
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE sha RESULT_VARIABLE sha_rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT sha_rc EQUAL 0 OR sha STREQUAL "")
  set(sha unknown)  # not a git checkout (a source tarball)
endif()
execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE changes RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  set(dirty false)  # nothing to compare with
elseif(changes STREQUAL "")
  set(dirty false)
else()
  set(dirty true)
endif()
file(WRITE ${OUT}.tmp "// Generated at build time by cmake/git_state.cmake.\n#include \"gppf/build_info.hpp\"\n\n"
     "const char* const gppf::build::kGitSha = \"${sha}\";\nconst bool gppf::build::kGitDirty = ${dirty};\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)

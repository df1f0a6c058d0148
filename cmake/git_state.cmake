# Writes OUT, a source file defining gppf::build::kGitDirty: whether tracked files differed from HEAD
# when this build ran (run at every build: a value taken at configure time goes stale with each edit).
# The file is replaced only when the answer changes, so an unchanged tree recompiles nothing.
execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE changes RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  set(dirty false)  # not a git checkout (a source tarball): nothing to compare with
elseif(changes STREQUAL "")
  set(dirty false)
else()
  set(dirty true)
endif()
file(WRITE ${OUT}.tmp "// Generated at build time by cmake/git_state.cmake.\n#include \"gppf/build_info.hpp\"\n\nconst bool gppf::build::kGitDirty = ${dirty};\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)

# How a GoogleTest executable becomes ctest tests: taskmoe_discover_tests(<target>
# [TIMEOUT <seconds per case>]).
#
# Release (and any other non-sanitizer build) registers one ctest test per GoogleTest case,
# as gtest_discover_tests does: each case its own process, its own line and its own skip.
# The sanitizer builds register one ctest test per GoogleTest suite (every case of a fixture
# or parameterised instantiation in one process, `--gtest_filter=<suite>.*`): a process
# under ASan or TSan costs about 0.2 s of start-up and exit (shadow memory, relocations, the
# leak scan), which the suite's 700 short cases paid 700 times, about a third of the ASan
# suite's CPU time. A failing suite's output names its failing cases; a suite whose cases
# all skip shows as passed there (the Release run lists each skip with its reason).
# TASKMOE_TESTS_PER_SUITE overrides the choice.
option(TASKMOE_TESTS_PER_SUITE "one ctest test per GoogleTest suite instead of per case"
       ${TASKMOE_SANITIZER_BUILD})

set(TASKMOE_LIST_TEST_SUITES_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/TaskmoeListTestSuites.cmake")

function(taskmoe_discover_tests target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "TIMEOUT" "")
  if(NOT TASKMOE_TESTS_PER_SUITE)
    set(properties "")
    if(arg_TIMEOUT)
      set(properties PROPERTIES TIMEOUT ${arg_TIMEOUT})
    endif()
    gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60 ${properties})
    return()
  endif()
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 0)  # the listing script then sets none: ctest's default per suite
  endif()
  # Like gtest_discover_tests: the built executable lists its tests, after each link (and
  # after a change to the listing script), into a file of add_test() calls that ctest
  # includes (a placeholder test that fails if the executable was never built).
  set(suites_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites.cmake")
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites_include.cmake")
  add_custom_command(
    OUTPUT "${suites_file}"
    COMMAND "${CMAKE_COMMAND}" -D "TEST_TARGET=${target}"
            -D "TEST_EXECUTABLE=$<TARGET_FILE:${target}>" -D "SUITES_FILE=${suites_file}"
            -D "CASE_TIMEOUT=${arg_TIMEOUT}" -P "${TASKMOE_LIST_TEST_SUITES_SCRIPT}"
    DEPENDS ${target} "${TASKMOE_LIST_TEST_SUITES_SCRIPT}"
    COMMENT "Listing the test suites of ${target}"
    VERBATIM)
  add_custom_target(${target}_suites ALL DEPENDS "${suites_file}")
  file(WRITE "${include_file}"
       "if(EXISTS \"${suites_file}\")\n"
       "  include(\"${suites_file}\")\n"
       "else()\n"
       "  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)\n"
       "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()
